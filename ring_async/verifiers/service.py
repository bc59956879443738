"""The Verifier gRPC service (proto/ring_async/v1/verifier.proto) over a :class:`VerifierCore`.

- ``Verify``: decodes a ``rollout/v1`` batch (anything else, or bytes that are not Arrow IPC: INVALID_ARGUMENT),
  scores its math and code rows through the core, and returns the same rows in the same order with ``reward``,
  ``verdict`` and ``verification_s`` set; masked verdicts keep reward null. External rows are not awaited: they come
  back ``pending_external`` and stay registered with the core until ``submit_reward`` (Control.SubmitRewards)
  answers them or ``external_timeout_s`` passes; the decided row then goes to ``on_external`` (the broker, in a
  cluster). A record the core cannot score (a math row without ``answer``, bad ``tests``, an unknown reward type)
  refuses the whole batch with INVALID_ARGUMENT, nothing scored.
- ``GetStatus``: verdict counts since start, queue depth, rows being scored, rows awaiting an external reward, and the
  latency of the work over the last minute.
- ``SubmitRewards`` (what Control.SubmitRewards fans out to every verifier): applies the rewards of rollouts waiting
  here; counts those already rewarded (a retry) and lists the ids unknown here. Unlike ``core.submit_reward`` it keeps
  no reward for a rollout that has not arrived: with several verifiers, every one but the owner would keep it forever.
- ``StreamRollouts``: scored rows as Verify scores them and external rows once decided, or (``pending_external_only``)
  external rows as they start waiting, after a first message with every row waiting already. Each subscriber has a
  bounded :class:`~ring_async.verifiers.feed.StreamFeed`: Verify never waits for a stream.

What the core needs beyond a rollout's columns rides in the row's msgpack ``metadata`` map, put there by the
generator (:mod:`ring_async.engines.generation.rollouts`): ``response_text`` (the decoded response), ``answer`` (the
math gold), ``tests`` (the code tests, JSON text) and ``lang`` (the prompt's own metadata, merged in).

Back-pressure: a Verify whose math/code rows would take the rows pending across calls past ``max_pending`` is
refused with RESOURCE_EXHAUSTED (the caller keeps its rollouts and retries), as is one whose external rows would
take the rows waiting past the core's ``max_awaiting_external``. Nothing queues beyond those bounds.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

import grpc
import msgpack
import pyarrow as pa
import pyarrow.compute as pc

from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT
from ring_async.transport import Server, pack_batch, start_server, unpack_batch
from ring_async.v1 import common_pb2, verifier_pb2, verifier_pb2_grpc
from ring_async.verifiers import verdicts as V
from ring_async.verifiers.core import REWARD_TYPES, RolloutToScore, ScoredRollout, VerifierCore
from ring_async.verifiers.errors import VerifierBusyError, VerifierClosedError, VerifierError
from ring_async.verifiers.feed import DEFAULT_MAX_BATCHES, DEFAULT_MAX_BYTES, StreamFeed

logger = logging.getLogger(__name__)

# Status codes of the verifier errors (PayloadError, a batch that is not rollout/v1, is INVALID_ARGUMENT already).
ERROR_STATUS: Mapping[type, grpc.StatusCode] = {
    VerifierError: grpc.StatusCode.INVALID_ARGUMENT,
    VerifierBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    VerifierClosedError: grpc.StatusCode.UNAVAILABLE,
}

STATUS_WINDOW_S = 60.0  # GetStatus latencies: "over the last minute"
REMEMBERED_REWARDS = 100_000  # rewarded rollout ids kept to answer a retried SubmitRewards with already_rewarded
SNAPSHOT_ROWS = 1024  # rows per message of the waiting-rows snapshot that starts a pending_external_only stream

# Where a decided external row goes: one-row rollout/v1 batches with reward and verdict set.
ExternalSink = Callable[[pa.RecordBatch], Awaitable[object]]


def rollouts_to_score(batch: pa.RecordBatch) -> list[RolloutToScore]:
    """The core's view of each row. VerifierError naming the row when its metadata is not a msgpack map, or a math or
    code row lacks ``response_text`` (an external row may: the reward model reads the response elsewhere)."""
    rows = codec.iter_rows(batch, ("rollout_id", "reward_type", "metadata", "finish_reason"))
    return [_to_score(index, *row) for index, row in enumerate(rows)]


def _to_score(index: int, rollout_id: str, reward_type: str, raw: bytes | None, finish_reason: str) -> RolloutToScore:
    where = f"rollouts[{index}] ({rollout_id!r}).metadata"
    metadata = metadata_map(raw, where)
    response = metadata.get("response_text")
    if response is None:
        if reward_type in ("math", "code"):
            raise VerifierError(f"{where}.response_text: missing; the generator decodes responses only when it has "
                                "a tokenizer")
        response = ""
    return RolloutToScore(rollout_id, reward_type, response, answer=metadata.get("answer"),
                          tests=metadata.get("tests"), metadata=metadata, finish_reason=finish_reason)


def metadata_map(raw: bytes | None, where: str) -> dict[str, Any]:
    """``raw`` decoded as a msgpack map ({} for None); VerifierError naming ``where`` otherwise."""
    if raw is None:
        return {}
    try:
        decoded = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.UnpackException, TypeError) as err:
        raise VerifierError(f"{where}: not valid msgpack: {err}") from None
    if not isinstance(decoded, dict):
        raise VerifierError(f"{where}: must be a msgpack map, got {type(decoded).__name__}")
    return decoded


def with_results(batch: pa.RecordBatch, results: Sequence[ScoredRollout]) -> pa.RecordBatch:
    """``batch`` with ``reward`` (null when masked or pending), ``verdict`` and ``verification_s`` from ``results``,
    row for row; every other column, and the schema tag, as they came."""
    columns = {
        "reward": pa.array([r.reward for r in results], pa.float32()),
        "verdict": pa.array([r.verdict for r in results], pa.string()),
        "verification_s": pa.array([r.latency_s for r in results], pa.float64()),
    }
    for name, values in columns.items():
        index = batch.schema.get_field_index(name)
        batch = batch.set_column(index, batch.schema.field(name), values)
    return batch


def reward_answers(request: verifier_pb2.SubmitRewardsRequest) -> list[tuple[str, float | None]]:
    """``(rollout_id, reward)`` per entry of ``request``, reward None when unverifiable. VerifierError (nothing to be
    applied) for an empty id, an id that appears twice, or a reward that is not finite. The Control service checks
    a request with it before sending it to any verifier, so no verifier applies part of a request another refuses."""
    answers: list[tuple[str, float | None]] = []
    seen: set[str] = set()
    repeated: list[str] = []
    for index, entry in enumerate(request.rewards):
        if not entry.rollout_id:
            raise VerifierError(f"rewards[{index}].rollout_id: must not be empty")
        if entry.rollout_id in seen:
            repeated.append(entry.rollout_id)
        seen.add(entry.rollout_id)
        if not entry.unverifiable and not math.isfinite(entry.reward):
            raise VerifierError(f"rewards[{index}] ({entry.rollout_id!r}).reward: must be a finite number, got "
                                f"{entry.reward}; set unverifiable when the reward model cannot score the response")
        answers.append((entry.rollout_id, None if entry.unverifiable else entry.reward))
    if repeated:
        raise VerifierError(f"rewards: rollout id(s) given more than once: {', '.join(sorted(set(repeated))[:5])}")
    return answers


def reward_type_filter(reward_types: Iterable[str]) -> frozenset[str] | None:
    """The reward types a stream asks for (None: all). VerifierError for one that does not exist: a typo would
    otherwise give a stream that silently never shows anything."""
    wanted = frozenset(reward_types)
    unknown = sorted(wanted - set(REWARD_TYPES))
    if unknown:
        raise VerifierError(f"reward_types: unknown {', '.join(map(repr, unknown))}; known: {', '.join(REWARD_TYPES)}")
    return wanted or None


@dataclass(eq=False)
class _Subscriber:
    """One StreamRollouts call: what it asked for, and its queue."""

    feed: StreamFeed[pa.RecordBatch]
    reward_types: frozenset[str] | None
    pending_only: bool

    def offer(self, rows: pa.RecordBatch, pending: bool) -> None:
        if pending != self.pending_only:
            return
        if self.reward_types is not None:
            rows = rows.filter(pc.is_in(rows.column("reward_type"), pa.array(sorted(self.reward_types))))
        if rows.num_rows:
            # Waiting rows are never dropped (the reward model would miss them); scored ones may be.
            self.feed.put(rows, rows.num_rows, rows.nbytes, droppable=not pending)


class VerifierService(verifier_pb2_grpc.VerifierServicer):
    """Verify, GetStatus, SubmitRewards and StreamRollouts over ``core``. ``on_external`` receives each external row
    once it is decided; without one, decided external rows are counted and dropped (with a warning).
    ``stream_queue_batches`` and ``stream_queue_bytes`` bound each stream subscriber's queue of scored batches."""

    def __init__(self, core: VerifierCore, *, verifier_id: str = "verifier-0", max_pending: int | None = None,
                 on_external: ExternalSink | None = None, stream_queue_batches: int = DEFAULT_MAX_BATCHES,
                 stream_queue_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.core = core
        self.verifier_id = verifier_id
        # The core's own bound makes extra callers wait; here the extra calls are refused instead, so the waiting
        # never starts and a gRPC client cannot pile up an unbounded queue of requests.
        self.max_pending = max_pending if max_pending is not None else core.max_pending
        self.on_external = on_external
        self.stream_queue_batches = stream_queue_batches
        self.stream_queue_bytes = stream_queue_bytes
        self.pending = 0  # math/code rows of the Verify calls in progress
        self._deliveries: set[asyncio.Task[object]] = set()
        self._subscribers: set[_Subscriber] = set()
        # The pending_external row of every rollout waiting here, for the snapshot a pending_external_only stream
        # starts with (the core keeps ids, not rows).
        self._waiting_rows: dict[str, pa.RecordBatch] = {}
        # Ids whose reward came (bounded, oldest forgotten first): a retried SubmitRewards is already_rewarded.
        self._rewarded: collections.OrderedDict[str, None] = collections.OrderedDict()

    async def Verify(self, request: verifier_pb2.VerifyRequest,
                     context: grpc.aio.ServicerContext) -> verifier_pb2.VerifyReply:
        batch = unpack_batch(request.rollouts, ROLLOUT)
        rollouts = rollouts_to_score(batch)
        work = sum(r.reward_type != "external" for r in rollouts)
        self._admit(work)  # before the first await: concurrent calls see each other's rows
        external = [i for i, r in enumerate(rollouts) if r.reward_type == "external"]
        # A copy of just the external rows, so a pending row does not keep the whole batch alive for minutes.
        external_rows = batch.take(external) if external else batch.slice(0, 0)
        position = {rollouts[i].rollout_id: j for j, i in enumerate(external)}

        def decided(result: ScoredRollout) -> None:
            self._decided(external_rows.slice(position[result.rollout_id], 1), result)

        try:
            results = await self.core.score(rollouts, on_external=decided)
        finally:
            self.pending -= work
        scored = with_results(batch, results)
        if external:
            self._started_waiting(with_results(external_rows, [results[i] for i in external]))
        if len(external) < len(rollouts) and self._subscribers:
            self._publish(scored.filter(pc.not_equal(scored.column("verdict"), V.PENDING_EXTERNAL)), pending=False)
        return verifier_pb2.VerifyReply(rollouts=pack_batch(scored, ROLLOUT),
                                        verdicts=collections.Counter(r.verdict for r in results))

    async def GetStatus(self, request: common_pb2.StatusRequest,
                        context: grpc.aio.ServicerContext) -> verifier_pb2.VerifierStatus:
        stats = self.core.stats()
        verdicts: collections.Counter[str] = collections.Counter()
        for kind in stats["by_type"].values():
            verdicts.update(kind["verdicts"])
        latency = self.core.work_latency(STATUS_WINDOW_S)
        return verifier_pb2.VerifierStatus(
            verifier_id=self.verifier_id,
            reward_types=list(REWARD_TYPES),
            verdicts=verdicts,
            queue_depth=stats["queued"],
            inflight=stats["running"],
            awaiting_external=stats["waiting_external"],
            latency_mean_s=latency["mean_s"] or 0.0,
            latency_p50_s=latency["p50_s"] or 0.0,
            latency_p95_s=latency["p95_s"] or 0.0,
        )

    async def SubmitRewards(self, request: verifier_pb2.SubmitRewardsRequest,
                            context: grpc.aio.ServicerContext) -> verifier_pb2.SubmitRewardsReply:
        answers = reward_answers(request)
        # No await from here to the reply: the set of waiting rollouts cannot change under the loop below.
        waiting = set(self.core.awaiting_external())
        accepted = already = 0
        unknown: list[str] = []
        for rollout_id, reward in answers:
            # Checked before "waiting": a rewarded rollout stays registered until its task next runs, and a retry
            # arriving in between must not count (or deliver) twice.
            if rollout_id in self._rewarded:
                already += 1
            elif rollout_id in waiting:
                self.core.submit_reward(rollout_id, reward, {"source": "SubmitRewards"})
                self._remember_rewarded(rollout_id)
                accepted += 1
            else:
                unknown.append(rollout_id)
        return verifier_pb2.SubmitRewardsReply(accepted=accepted, already_rewarded=already, unknown=len(unknown),
                                               unknown_rollout_ids=unknown)

    async def StreamRollouts(self, request: verifier_pb2.StreamRolloutsRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[verifier_pb2.StreamRolloutsReply]:
        subscriber = _Subscriber(StreamFeed(self.stream_queue_batches, self.stream_queue_bytes),
                                 reward_type_filter(request.reward_types), request.pending_external_only)
        # Subscribed and snapshotted with no await in between: every waiting row is in the snapshot or comes later,
        # none is missed and none comes twice.
        self._subscribers.add(subscriber)
        if subscriber.pending_only:
            for rows in self._waiting_snapshot():
                subscriber.offer(rows, pending=True)
        try:
            while (item := await subscriber.feed.get()) is not None:
                rows, skipped = item
                yield verifier_pb2.StreamRolloutsReply(rollouts=pack_batch(rows, ROLLOUT), skipped=skipped)
        finally:
            self._subscribers.discard(subscriber)

    @property
    def stream_subscribers(self) -> int:
        """StreamRollouts calls open now."""
        return len(self._subscribers)

    def _admit(self, rows: int) -> None:
        if self.pending + rows > self.max_pending:
            advice = "split the batch" if rows > self.max_pending else "retry later"
            raise VerifierBusyError(
                f"verifier {self.verifier_id} is busy: {self.pending} rollout(s) pending and this batch adds {rows}, "
                f"at most {self.max_pending} at a time; {advice}")
        self.pending += rows

    def _started_waiting(self, pending: pa.RecordBatch) -> None:
        """Keep and publish the pending rows of a Verify call that still wait. Not done at registration: a call that
        fails withdraws its rows, and nobody may be told they wait. A row decided already (its reward came first) is
        left out; it was published as scored when decided."""
        waiting = set(self.core.awaiting_external())
        ids = pending.column("rollout_id").to_pylist()
        keep = [i for i, rollout_id in enumerate(ids) if rollout_id in waiting]
        for i in keep:
            self._waiting_rows[ids[i]] = pending.slice(i, 1)
        if keep and self._subscribers:
            self._publish(pending.take(keep), pending=True)

    def _waiting_snapshot(self) -> list[pa.RecordBatch]:
        waiting = self.core.awaiting_external()
        rows = [self._waiting_rows[i] for i in waiting if i in self._waiting_rows]
        return [pa.concat_batches(rows[start:start + SNAPSHOT_ROWS]) for start in range(0, len(rows), SNAPSHOT_ROWS)]

    def _publish(self, rows: pa.RecordBatch, *, pending: bool) -> None:
        if rows.num_rows:
            for subscriber in self._subscribers:
                subscriber.offer(rows, pending)

    def _remember_rewarded(self, rollout_id: str) -> None:
        self._rewarded[rollout_id] = None
        self._rewarded.move_to_end(rollout_id)
        while len(self._rewarded) > REMEMBERED_REWARDS:
            self._rewarded.popitem(last=False)

    def _decided(self, row: pa.RecordBatch, result: ScoredRollout) -> None:
        self._waiting_rows.pop(result.rollout_id, None)
        if result.details.get("reason") != "external_timeout":  # a reward came (in process or by SubmitRewards)
            self._remember_rewarded(result.rollout_id)
        scored = with_results(row, [result])
        self._publish(scored, pending=False)
        if self.on_external is None:
            logger.warning("external rollout %s decided (%s) but the verifier has no on_external sink: dropped",
                           result.rollout_id, result.verdict)
            return
        task = asyncio.ensure_future(self.on_external(scored))
        self._deliveries.add(task)
        task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[object]) -> None:
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivering a decided external rollout failed: %s", task.exception())

    async def close(self) -> None:
        """End the rollout streams and wait for the decided external rows still being delivered (the core is closed
        by its owner)."""
        for subscriber in self._subscribers:
            subscriber.feed.close()
        await asyncio.gather(*self._deliveries, return_exceptions=True)


async def start_verifier_server(service: VerifierService, **server_kwargs: Any) -> Server:
    """Start a gRPC server for ``service`` (health, reflection, auth as in :func:`ring_async.transport.start_server`)
    with the verifier errors mapped to their status codes."""
    return await start_server([service], service_errors=ERROR_STATUS, **server_kwargs)
