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
from typing import Any, Awaitable, Callable, Mapping, Sequence

import grpc
import msgpack
import pyarrow as pa

from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT
from ring_async.transport import Server, pack_batch, start_server, unpack_batch
from ring_async.v1 import common_pb2, verifier_pb2, verifier_pb2_grpc
from ring_async.verifiers.core import REWARD_TYPES, RolloutToScore, ScoredRollout, VerifierCore
from ring_async.verifiers.errors import VerifierBusyError, VerifierClosedError, VerifierError

logger = logging.getLogger(__name__)

# Status codes of the verifier errors (PayloadError, a batch that is not rollout/v1, is INVALID_ARGUMENT already).
ERROR_STATUS: Mapping[type, grpc.StatusCode] = {
    VerifierError: grpc.StatusCode.INVALID_ARGUMENT,
    VerifierBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    VerifierClosedError: grpc.StatusCode.UNAVAILABLE,
}

STATUS_WINDOW_S = 60.0  # GetStatus latencies: "over the last minute"

# Where a decided external row goes: one-row rollout/v1 batches with reward and verdict set.
ExternalSink = Callable[[pa.RecordBatch], Awaitable[object]]


def rollouts_to_score(batch: pa.RecordBatch) -> list[RolloutToScore]:
    """The core's view of each row. VerifierError naming the row when its metadata is not a msgpack map, or a math or
    code row lacks ``response_text`` (an external row may: the reward model reads the response elsewhere)."""
    rows = codec.iter_rows(batch, ("rollout_id", "reward_type", "metadata"))
    return [_to_score(index, *row) for index, row in enumerate(rows)]


def _to_score(index: int, rollout_id: str, reward_type: str, raw: bytes | None) -> RolloutToScore:
    where = f"rollouts[{index}] ({rollout_id!r}).metadata"
    metadata = _metadata(raw, where)
    response = metadata.get("response_text")
    if response is None:
        if reward_type in ("math", "code"):
            raise VerifierError(f"{where}.response_text: missing; the generator decodes responses only when it has "
                                "a tokenizer")
        response = ""
    return RolloutToScore(rollout_id, reward_type, response, answer=metadata.get("answer"),
                          tests=metadata.get("tests"), metadata=metadata)


def _metadata(raw: bytes | None, where: str) -> dict[str, Any]:
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


class VerifierService(verifier_pb2_grpc.VerifierServicer):
    """Verify and GetStatus over ``core``. ``on_external`` receives each external row once it is decided; without
    one, decided external rows are counted and dropped (with a warning)."""

    def __init__(self, core: VerifierCore, *, verifier_id: str = "verifier-0", max_pending: int | None = None,
                 on_external: ExternalSink | None = None) -> None:
        self.core = core
        self.verifier_id = verifier_id
        # The core's own bound makes extra callers wait; here the extra calls are refused instead, so the waiting
        # never starts and a gRPC client cannot pile up an unbounded queue of requests.
        self.max_pending = max_pending if max_pending is not None else core.max_pending
        self.on_external = on_external
        self.pending = 0  # math/code rows of the Verify calls in progress
        self._deliveries: set[asyncio.Task[object]] = set()

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
        return verifier_pb2.VerifyReply(rollouts=pack_batch(with_results(batch, results), ROLLOUT),
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

    def _admit(self, rows: int) -> None:
        if self.pending + rows > self.max_pending:
            advice = "split the batch" if rows > self.max_pending else "retry later"
            raise VerifierBusyError(
                f"verifier {self.verifier_id} is busy: {self.pending} rollout(s) pending and this batch adds {rows}, "
                f"at most {self.max_pending} at a time; {advice}")
        self.pending += rows

    def _decided(self, row: pa.RecordBatch, result: ScoredRollout) -> None:
        scored = with_results(row, [result])
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
        """Wait for the decided external rows still being delivered (the core is closed by its owner)."""
        await asyncio.gather(*self._deliveries, return_exceptions=True)


async def start_verifier_server(service: VerifierService, **server_kwargs: Any) -> Server:
    """Start a gRPC server for ``service`` (health, reflection, auth as in :func:`ring_async.transport.start_server`)
    with the verifier errors mapped to their status codes."""
    overrides = {**ERROR_STATUS, **server_kwargs.pop("error_status", {})}
    return await start_server([service], error_status=overrides, **server_kwargs)
