"""The generator's work loop: lease prompt groups, generate, forward finished samples, respect back-pressure.

Leasing and forwarding interleave in one task: while fewer than ``max_inflight_groups`` groups are held (and the loop
is not paused or backing off), it leases up to ``groups_per_lease`` more and submits them to the engine; every sample
that finishes is forwarded at once (with whatever else finished by then) as an Arrow ``rollout`` batch, unscored,
to ``forward`` (a verifier client, or any callable). When the broker answers with back-pressure the loop stops
leasing for ``backpressure_wait_s``; groups already leased are still generated and forwarded, since the broker
always accepts their rollouts and dropping them would waste the work. Pausing (Generator.Pause) stops leasing the
same way until resumed.

With ``max_staleness`` (the algorithm's bound) and ``abort_stale`` on, a sample is stopped as soon as the policy
version makes it stale: once the learner has published version V, a rollout begun under a version older than
V - max_staleness can never be trained (the broker learns V before it emits another step), so decoding the rest of
it only keeps a batch slot from a fresh group. It comes back with finish reason "abort"; the verifier masks it and
the broker counts it stale, like the finished members of its group.

The broker is anything with ``lease(generator_id, max_groups) -> LeaseResult`` (sync or async): the in-process
:class:`~ring_async.broker.core.Broker`, or :class:`GrpcBrokerClient` over the Broker service.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

import pyarrow as pa

from ring_async.config import GenerationConfig
from ring_async.engines.generation.errors import RequestError
from ring_async.engines.generation.interface import GenerationEngine
from ring_async.engines.generation.rollouts import Tokenize, requests_from_prompt_groups, samples_to_rollouts
from ring_async.engines.generation.types import CompletedSample, SamplingParams, aborted_samples

logger = logging.getLogger(__name__)

Forward = Callable[[pa.RecordBatch], Awaitable[Any] | Any]


class LeaseLike(Protocol):
    groups: pa.RecordBatch
    backpressure: bool
    policy_version: int


class BrokerClient(Protocol):
    def lease(self, generator_id: str, max_groups: int) -> LeaseLike | Awaitable[LeaseLike]: ...


def sampling_from_config(config: GenerationConfig) -> SamplingParams:
    """The sampling parameters every leased group gets (its K comes from the group)."""
    return SamplingParams(
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_tokens=config.max_tokens,
        stop=tuple(config.stop),
        stop_token_ids=tuple(config.stop_token_ids),
    )


@dataclass(frozen=True)
class PauseInfo:
    paused: bool
    reason: str
    paused_at_unix_s: float


@dataclass(frozen=True)
class LoopStatus:
    generator_id: str
    inflight_groups: int
    groups_leased: int
    groups_completed: int
    rollouts_forwarded: int
    forward_errors: int
    lease_errors: int
    refused_groups: int
    stale_aborted: int
    backpressure_events: int
    backpressure: bool
    broker_policy_version: int
    pause: PauseInfo


class GenerationLoop:
    def __init__(
        self,
        engine: GenerationEngine,
        broker: BrokerClient,
        forward: Forward,
        *,
        config: GenerationConfig | None = None,
        generator_id: str = "generator-0",
        tokenize: Tokenize | None = None,
        tokenizer=None,
        max_staleness: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.engine = engine
        self.broker = broker
        self.forward = forward
        self.config = config or GenerationConfig()
        self.generator_id = generator_id
        self.sampling = sampling_from_config(self.config)
        self._tokenize = tokenize
        self._tokenizer = tokenizer
        self._clock = clock
        self.max_staleness = max_staleness if self.config.abort_stale else None
        self._abort_before = 0  # samples begun under an older policy version have been stopped
        self._open: dict[str, int] = {}  # group id -> samples not yet finished
        # Finished samples of groups that are not complete yet. A group goes to the verifier and the broker whole: the
        # broker can use nothing of a group before all of it is in (advantages are per group), and one call per
        # group instead of one per finished sample is a fraction of the RPCs, decoding and journaling on every side.
        self._finished: dict[str, list[CompletedSample]] = {}
        self._lease_after = 0.0
        self._pause = PauseInfo(False, "", 0.0)
        self._backpressure = False
        self.groups_leased = 0
        self.groups_completed = 0
        self.rollouts_forwarded = 0
        self.forward_errors = 0
        self.lease_errors = 0
        self.refused_groups = 0
        self.stale_aborted = 0
        self.backpressure_events = 0
        self.broker_policy_version = -1
        self.prompts_exhausted = False

    # ------------------------------------------------------------------------------------------- control

    def pause(self, reason: str = "") -> PauseInfo:
        if not self._pause.paused:
            self._pause = PauseInfo(True, reason, time.time())
        return self._pause

    def resume(self) -> PauseInfo:
        self._pause = PauseInfo(False, "", 0.0)
        return self._pause

    @property
    def inflight_groups(self) -> int:
        return len(self._open)

    def status(self) -> LoopStatus:
        return LoopStatus(
            generator_id=self.generator_id,
            inflight_groups=self.inflight_groups,
            groups_leased=self.groups_leased,
            groups_completed=self.groups_completed,
            rollouts_forwarded=self.rollouts_forwarded,
            forward_errors=self.forward_errors,
            lease_errors=self.lease_errors,
            refused_groups=self.refused_groups,
            stale_aborted=self.stale_aborted,
            backpressure_events=self.backpressure_events,
            backpressure=self._backpressure,
            broker_policy_version=self.broker_policy_version,
            pause=self._pause,
        )

    # ------------------------------------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event | None = None, max_groups: int | None = None) -> LoopStatus:
        """Work until ``stop`` is set, or until ``max_groups`` groups were leased and all of them forwarded."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            if max_groups is not None and self.groups_leased >= max_groups and not self._open:
                break
            self.abort_stale()
            await self._maybe_lease(max_groups)
            # Poll briefly while there is leasing to do, otherwise wait for the engine (or the stop event).
            wait = 0.05 if self._wants_to_lease(max_groups) or not self._open else 0.5
            sample = await self.engine.next_completed(timeout=wait)
            if sample is None:
                continue
            finished = [sample]
            while (more := await self.engine.next_completed(timeout=0)) is not None:
                finished.append(more)
            await self._forward(finished)
        return self.status()

    def abort_stale(self) -> None:
        """Stop the samples the policy version has made stale: at every turn of the loop, and at once when new weights
        are loaded (the Generator service calls it). Either version may be ahead: the learner loads the generator
        before it tells the broker, and a generator that missed an update lags the broker."""
        if self.max_staleness is None:
            return
        oldest_usable = max(self.engine.policy_version, self.broker_policy_version) - self.max_staleness
        if oldest_usable > self._abort_before:
            self._abort_before = oldest_usable
            self.engine.abort_started_before(oldest_usable)

    def _wants_to_lease(self, max_groups: int | None) -> bool:
        if self._pause.paused or self._clock() < self._lease_after:
            return False
        if max_groups is not None and self.groups_leased >= max_groups:
            return False
        return len(self._open) < self.config.max_inflight_groups

    async def _maybe_lease(self, max_groups: int | None) -> None:
        if not self._wants_to_lease(max_groups):
            return
        room = self.config.max_inflight_groups - len(self._open)
        want = min(self.config.groups_per_lease, room)
        if max_groups is not None:
            want = min(want, max_groups - self.groups_leased)
        try:
            result = self.broker.lease(self.generator_id, want)
            if inspect.isawaitable(result):
                result = await result
        except Exception as err:  # a broker that is down or restarting: back off and try again
            self.lease_errors += 1
            logger.warning("%s: lease failed, retrying in %.1f s: %s", self.generator_id, self.config.idle_wait_s, err)
            self._lease_after = self._clock() + self.config.idle_wait_s
            return
        self.broker_policy_version = int(result.policy_version)
        self.prompts_exhausted = bool(getattr(result, "prompts_exhausted", False))
        self._backpressure = bool(result.backpressure)
        # The broker's advised wait wins over ours: it knows when the condition ends (e.g. sync mode's step).
        advised = float(getattr(result, "retry_after_s", 0.0) or 0.0)
        if result.backpressure:
            self.backpressure_events += 1
            self._lease_after = self._clock() + (advised or self.config.backpressure_wait_s)
        elif result.groups.num_rows == 0:
            self._lease_after = self._clock() + (advised or self.config.idle_wait_s)
        if result.groups.num_rows:
            await self._submit(result.groups)

    async def _submit(self, groups: pa.RecordBatch) -> None:
        requests = requests_from_prompt_groups(groups, self.sampling, self._tokenize)
        self.groups_leased += len(requests)
        for request in requests:
            self._open[request.group_id] = request.sampling.n
            try:
                self.engine.submit(request)
            except RequestError as err:
                # The group cannot be generated here (e.g. a prompt longer than the context): its K samples go out
                # empty with finish reason "abort", so the group closes instead of being requeued forever.
                self.refused_groups += 1
                logger.warning("%s: group %s refused by the engine: %s", self.generator_id, request.group_id, err)
                await self._forward(aborted_samples(request, self.engine.policy_version))

    async def _forward(self, samples: list[CompletedSample]) -> None:
        """Forward the groups these samples complete, in one batch; keep the rest until their groups are done."""
        complete: list[CompletedSample] = []
        for sample in samples:
            if sample.finish_reason == "abort" and sample.policy_version_first < self._abort_before:
                self.stale_aborted += 1
            left = self._open.get(sample.group_id)
            if left is None:  # not a group of ours (any more): the broker decides what it is
                complete.append(sample)
            elif left <= 1:
                del self._open[sample.group_id]
                self.groups_completed += 1
                complete += self._finished.pop(sample.group_id, [])
                complete.append(sample)
            else:
                self._open[sample.group_id] = left - 1
                self._finished.setdefault(sample.group_id, []).append(sample)
        if not complete:
            return
        batch = samples_to_rollouts(complete, tokenizer=self._tokenizer)
        try:
            result = self.forward(batch)
            if inspect.isawaitable(result):
                await result
        except Exception as err:
            # The rollouts are lost to this generator; the broker's lease expiry requeues their prompts.
            self.forward_errors += 1
            logger.warning("%s: forwarding %d rollout(s) failed: %s", self.generator_id, batch.num_rows, err)
            return
        self.rollouts_forwarded += batch.num_rows

