"""The learner's work loop and its gRPC service (proto/ring_async/v1/learner.proto).

:class:`LearnerLoop` pulls the train batch of the next step id from the broker (``last consumed + 1``), trains it
(one optimizer step, in a worker thread so the event loop keeps answering status calls), publishes the new version
to the generators, reports it to the broker, and acknowledges the steps a checkpoint holds so the broker may forget
them. A batch the learner refuses is not skipped: step ids are consecutive, so the loop backs off and asks for the
same step again (the broker keeps unacknowledged steps), and the refusal shows in the status.

With several data-parallel ranks, each rank runs a loop over the same broker: every rank asks for the same step id
and gets the same batch (the broker's outbox re-delivers it), trains its share, and only rank 0 publishes, reports
and acknowledges.

:class:`LearnerService` answers GetStatus and Checkpoint (between two steps; a second request while one is written
is refused with FAILED_PRECONDITION).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import grpc

from ring_async.broker.durable import DurableBroker
from ring_async.data.train_batch import TrainBatch
from ring_async.engines.training.errors import (
    BatchRejected,
    CheckpointError,
    CheckpointTagError,
    LearnerError,
    PublishError,
    StepOrderError,
)
from ring_async.engines.training.learner import CheckpointInfo, LearnerCore, StepResult
from ring_async.engines.training.publisher import PublishReport, WeightPublisher
from ring_async.errors import PayloadError
from ring_async.transport import Server, start_server
from ring_async.v1 import broker_pb2, broker_pb2_grpc, common_pb2, learner_pb2, learner_pb2_grpc

log = logging.getLogger(__name__)

ERROR_STATUS: Mapping[type, grpc.StatusCode] = {
    LearnerError: grpc.StatusCode.FAILED_PRECONDITION,
    BatchRejected: grpc.StatusCode.INVALID_ARGUMENT,
    CheckpointTagError: grpc.StatusCode.INVALID_ARGUMENT,
    StepOrderError: grpc.StatusCode.FAILED_PRECONDITION,
    CheckpointError: grpc.StatusCode.FAILED_PRECONDITION,
    PublishError: grpc.StatusCode.UNAVAILABLE,
}


class BatchSource(Protocol):
    """Where train batches come from: the broker, in process or over gRPC. Methods may be sync or async."""

    def next_batch(self, step_id: int, learner_version: int, wait_s: float) -> Any: ...  # TrainBatch | bytes | None

    def acknowledge(self, through_step_id: int) -> Any: ...

    def report_version(self, version: int) -> Any: ...


async def _call(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


class LocalBatchSource:
    """The in-process :class:`DurableBroker` as a batch source (tests, single-process runs)."""

    def __init__(self, broker: DurableBroker, poll_s: float = 0.02):
        self.broker = broker
        self.poll_s = poll_s

    async def next_batch(self, step_id: int, learner_version: int, wait_s: float) -> TrainBatch | None:
        self.report_version(learner_version)
        deadline = asyncio.get_running_loop().time() + wait_s
        while (batch := self.broker.train_batch(step_id)) is None:
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(self.poll_s)
        return batch

    def acknowledge(self, through_step_id: int) -> None:
        self.broker.acknowledge(through_step_id)

    def report_version(self, version: int) -> None:
        # As the Broker service does: only a newer version changes anything (a learner resumed from an older
        # checkpoint is behind the broker until it catches up), and an unchanged one is not journaled again.
        if version > self.broker.core.policy_version:
            self.broker.set_policy_version(version)


class GrpcBatchSource:
    """The Broker service as a batch source (NextTrainBatch, AcknowledgeSteps, ReportPolicyVersion)."""

    def __init__(self, channel: grpc.aio.Channel, learner_id: str = "learner-0"):
        self._stub = broker_pb2_grpc.BrokerStub(channel)
        self.learner_id = learner_id

    async def next_batch(self, step_id: int, learner_version: int, wait_s: float) -> bytes | None:
        # The call's deadline leaves the broker its wait plus time to answer.
        reply = await self._stub.NextTrainBatch(
            broker_pb2.NextTrainBatchRequest(learner_id=self.learner_id, step_id=step_id,
                                             learner_version=learner_version, wait_s=wait_s), timeout=wait_s + 30.0)
        return reply.batch.ipc if reply.ready else None

    async def acknowledge(self, through_step_id: int) -> None:
        await self._stub.AcknowledgeSteps(
            broker_pb2.AcknowledgeStepsRequest(learner_id=self.learner_id, through_step_id=through_step_id))

    async def report_version(self, version: int) -> None:
        await self._stub.ReportPolicyVersion(broker_pb2.PolicyVersion(version=version, learner_id=self.learner_id))


# Least seconds between two pushes to generators that missed a version (one that is down fails each of them).
CATCH_UP_EVERY_S = 5.0
# Status codes of a broker that is down or restarting, not of a refused call.
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass
class LoopStatus:
    steps: int = 0
    refused_batches: int = 0
    publish_failures: int = 0
    broker_unreachable: int = 0  # calls to the broker that failed and were retried
    last_error: str = ""
    last_publish: PublishReport | None = None


class LearnerLoop:
    """Pull, train, publish, report, until ``max_steps`` optimizer steps are taken or :meth:`stop` is called."""

    def __init__(self, core: LearnerCore, source: BatchSource, publisher: WeightPublisher | None = None, *,
                 max_steps: int | None = None, retry_s: float = 1.0,
                 on_step: Callable[[StepResult], None] | None = None):
        self.core = core
        self.source = source
        self.publisher = publisher if core.rank == 0 else None
        self.max_steps = max_steps
        self.retry_s = retry_s
        self.on_step = on_step
        self.status = LoopStatus()
        self._stopping = asyncio.Event()
        # One thing at a time touches the DeepSpeed engine: a step, or a checkpoint between two steps.
        self.engine_lock = asyncio.Lock()
        self._checkpointing = False
        self._next_catch_up = 0.0

    def stop(self) -> None:
        self._stopping.set()

    def _done(self) -> bool:
        return self._stopping.is_set() or (self.max_steps is not None and self.core.step >= self.max_steps)

    async def run(self) -> None:
        wait_s = self.core.config.learner.batch_wait_s
        while not self._done():
            step_id = self.core.last_consumed_step + 1
            batch = await self._to_broker(lambda: self.source.next_batch(step_id, self.core.policy_version, wait_s))
            if batch is None:
                await self._catch_up_generators()
                continue
            try:
                async with self.engine_lock:
                    # on_step (rank 0) runs in the training thread, before the step's checkpoint: see train_step.
                    record = self.on_step if self.core.rank == 0 else None
                    result = await asyncio.to_thread(self.core.train_step, batch, record)
                    weights = self.core.weights() if self.publisher is not None else None
            except (BatchRejected, StepOrderError, PayloadError) as err:
                self.status.refused_batches += 1
                self.status.last_error = f"step {step_id}: {err}"
                log.error("refused the train batch of step %d: %s; asking again in %.1fs", step_id, err, self.retry_s)
                await self._sleep(self.retry_s)
                continue
            self.status.steps += 1
            await self._after_step(result, weights)

    async def _after_step(self, result: StepResult, weights) -> None:
        if self.core.rank != 0:
            return
        if self.publisher is not None:
            report = await self.publisher.publish(weights, result.policy_version)
            self.status.last_publish = report
            if report.failed:
                self.status.publish_failures += len(report.failed)
                self.status.last_error = f"version {report.version} not loaded by {sorted(report.failed)}"
                log.warning("policy version %d: %s", report.version, report.failed)
        await self._to_broker(lambda: self.source.report_version(result.policy_version))
        every = self.core.config.learner.checkpoint_every_steps
        if every is not None and self.core.step % every == 0:  # the core wrote one at the end of this step
            await self._to_broker(lambda: self.source.acknowledge(self.core.last_consumed_step))

    async def checkpoint_current(self) -> CheckpointInfo:
        """A checkpoint of the weights as they are now, unless the latest one already holds them."""
        async with self.engine_lock:  # a step in progress finishes first
            last = self.core.last_checkpoint
        if last is not None and last.step == self.core.step:
            return last
        return await self.checkpoint()

    async def checkpoint(self, tag: str | None = None) -> CheckpointInfo:
        """A checkpoint between two steps; then the broker may forget every step it holds."""
        if self._checkpointing:
            raise CheckpointError("a checkpoint is already being written")
        self._checkpointing = True
        try:
            async with self.engine_lock:
                info = await asyncio.to_thread(self.core.save_checkpoint, tag or None)
        finally:
            self._checkpointing = False
        if info.last_consumed_step >= 0 and self.core.rank == 0:
            await _call(self.source.acknowledge(info.last_consumed_step))
        return info

    def snapshot(self) -> dict[str, Any]:
        """The learner's state for GetStatus and the metrics collector (plain values)."""
        core = self.core
        return {"learner_id": core.learner_id, "step": core.step, "policy_version": core.policy_version,
                "last_consumed_step": core.last_consumed_step,
                "last_checkpoint_step": core.last_checkpoint.step if core.last_checkpoint else -1,
                "tokens_per_s": core.tokens_per_s(), "refused_batches": self.status.refused_batches,
                "publish_failures": self.status.publish_failures,
                "broker_unreachable": self.status.broker_unreachable, "last_step_metrics": dict(core.last_metrics)}

    async def _catch_up_generators(self) -> None:
        """No batch is ready: push the current version to generators that missed it. A generator left on an old
        version (a failed push, or a restart) makes only stale rollouts, and without fresh rollouts no step comes
        that would publish to it again."""
        now = time.monotonic()
        if self.publisher is None or now < self._next_catch_up or not self.publisher.lagging(self.core.policy_version):
            return
        self._next_catch_up = now + CATCH_UP_EVERY_S
        report = await self.push_current(self.publisher.lagging(self.core.policy_version))
        if report.generators:
            log.info("policy version %d caught up on %s", report.version, ", ".join(report.generators))

    async def push_current(self, generators: Sequence[str]) -> PublishReport:
        """Publish the current weights to ``generators`` only (between two steps, so they are one version)."""
        async with self.engine_lock:
            weights, version = self.core.weights(), self.core.policy_version
        return await self.publisher.publish(weights, version, only=generators)

    async def _to_broker(self, call: Callable[[], Any]) -> Any:
        """A call to the batch source, retried while the broker cannot be reached (it is restarting, or the network
        blipped); None when the loop is stopped meanwhile. Retrying is safe: the broker re-delivers a step by id and
        ignores an old version or acknowledgement."""
        while True:
            try:
                return await _call(call())
            except grpc.aio.AioRpcError as err:
                if err.code() not in _TRANSIENT:
                    raise
                self.status.broker_unreachable += 1
                self.status.last_error = f"broker: {err.code().name}: {err.details()}"
                log.warning("the broker cannot be reached (%s); retrying in %.1fs", err.code().name, self.retry_s)
                await self._sleep(self.retry_s)
                if self._stopping.is_set():
                    return None

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass


class LearnerService(learner_pb2_grpc.LearnerServicer):
    def __init__(self, loop: LearnerLoop):
        self.loop = loop

    async def GetStatus(self, request: common_pb2.StatusRequest,
                        context: grpc.aio.ServicerContext) -> learner_pb2.LearnerStatus:
        s = self.loop.snapshot()
        metrics = {k: float(v) for k, v in s["last_step_metrics"].items() if isinstance(v, (int, float))}
        metrics["refused_batches"] = float(s["refused_batches"])
        metrics["publish_failures"] = float(s["publish_failures"])
        return learner_pb2.LearnerStatus(
            learner_id=s["learner_id"], step=s["step"], policy_version=s["policy_version"],
            last_consumed_step=s["last_consumed_step"], last_checkpoint_step=s["last_checkpoint_step"],
            tokens_per_s=s["tokens_per_s"], last_step_metrics=metrics)

    async def Checkpoint(self, request: common_pb2.CheckpointRequest,
                         context: grpc.aio.ServicerContext) -> common_pb2.CheckpointReply:
        info = await self.loop.checkpoint(request.tag)
        return common_pb2.CheckpointReply(path=str(info.path), step=info.step, policy_version=info.policy_version,
                                          last_consumed_step=info.last_consumed_step)


async def serve_learner(service: LearnerService, **server_kwargs: Any) -> Server:
    """Start a gRPC server for ``service`` (health, reflection, auth as in :func:`ring_async.transport.start_server`)
    with the learner errors mapped to their status codes."""
    return await start_server([service], service_errors=ERROR_STATUS, **server_kwargs)
