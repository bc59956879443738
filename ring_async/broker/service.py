"""The Broker gRPC service (proto/ring_async/v1/broker.proto) over a :class:`~ring_async.broker.durable.DurableBroker`.

- ``LeasePrompts``: up to ``max_groups`` ``prompt_group/v1`` rows (0 asked: INVALID_ARGUMENT), with back-pressure, the
  broker's policy version and, when fewer groups than asked were leased, how long to wait before asking again.
- ``SubmitRollouts``: a ``rollout/v1`` batch that does not decode or carries another schema is INVALID_ARGUMENT; one
  with an invalid row (unknown group, wrong id, ...) is FAILED_PRECONDITION; either way nothing of it is kept. The
  journal stores the IPC bytes as they arrived.
- ``NextTrainBatch``: long-polls up to ``wait_s`` (and never past the call's deadline), woken by every submit; a
  step already acknowledged, or beyond the next one the broker can assemble, is FAILED_PRECONDITION.
- ``AcknowledgeSteps``, ``ReportPolicyVersion``, ``GetStatus``: the delivery cursor, the learner's version, the
  counters.

The broker core is single-threaded: every handler runs on the server's event loop and none hands the broker to a
thread, so calls never interleave inside it. Leases expire on a background task (:meth:`BrokerService.start`, done
by :func:`serve_broker`), so a prompt whose generator died is requeued even while nobody calls.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Mapping

import grpc
import pyarrow as pa

from ring_async.broker.core import SubmitResult
from ring_async.broker.durable import DurableBroker
from ring_async.data.schemas import PROMPT_GROUP, ROLLOUT, TRAIN_BATCH
from ring_async.errors import BrokerError, PayloadError
from ring_async.transport import Server, pack_batch, start_server, unpack_batch
from ring_async.v1 import broker_pb2, broker_pb2_grpc, common_pb2

logger = logging.getLogger(__name__)

# The transport's defaults say the same; pinned here because broker.proto promises these codes to its clients.
ERROR_STATUS: Mapping[type, grpc.StatusCode] = {
    PayloadError: grpc.StatusCode.INVALID_ARGUMENT,
    BrokerError: grpc.StatusCode.FAILED_PRECONDITION,
}

# A long-poll answers "not ready" this long before the call's deadline, so the reply still reaches the caller.
DEADLINE_MARGIN_S = 0.2


class BrokerService(broker_pb2_grpc.BrokerServicer):
    """The Broker service over ``broker``, which the caller owns (and closes).

    ``retry_after_s`` is the wait advised when a lease comes back short. ``poll_s`` bounds how long a long-poll
    sleeps between looks at the pool: submits through this service wake it at once, so the interval only matters
    for rollouts handed to the broker directly in process (use :meth:`submit` to wake the pollers too).
    ``expire_every_s`` is the background lease-expiry period (default: a tenth of the lease timeout, at most 5 s).
    """

    def __init__(self, broker: DurableBroker, *, retry_after_s: float = 1.0, poll_s: float = 0.5,
                 expire_every_s: float | None = None) -> None:
        self.broker = broker
        self.retry_after_s = retry_after_s
        self.poll_s = poll_s
        lease_timeout_s = broker.core.config.broker.lease_timeout_s
        self.expire_every_s = expire_every_s if expire_every_s is not None else min(5.0, lease_timeout_s / 10)
        if self.poll_s <= 0 or self.expire_every_s <= 0:
            raise ValueError(f"poll_s and expire_every_s must be positive, got {poll_s} and {self.expire_every_s}")
        # The version each generator last said it had loaded: who lags behind the learner.
        self.generator_versions: dict[str, int] = {}
        # Replaced after every submit: a poller waits on the event current when it last looked at the pool, so a
        # submit between its look and its wait still wakes it (all on one thread, no await in between).
        self._submitted = asyncio.Event()
        self._closing = False
        self._expiry: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background lease expiry (inside the serving event loop). Starting twice is a no-op."""
        if self._expiry is None or self._expiry.done():
            self._closing = False
            self._expiry = asyncio.get_running_loop().create_task(self._expire_forever(), name="broker-lease-expiry")

    async def close(self) -> None:
        """Stop the lease expiry and answer pending long-polls "not ready" now. Call it before stopping the server,
        so that a learner's long-poll does not hold up the stop for its whole grace period."""
        self._closing = True
        self._wake()
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
            self._expiry = None

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(self.expire_every_s)
            try:
                expired = self.broker.expire_leases()
            except Exception:  # a failing journal write must not silently end expiry for the rest of the run
                logger.exception("lease expiry failed; trying again in %.1f s", self.expire_every_s)
                continue
            if expired:
                logger.info("%d lease(s) expired; their prompts are queued again", expired)

    # ----------------------------------------------------------------- in-process entry points

    def submit(self, rollouts: pa.RecordBatch, wire: bytes | None = None) -> SubmitResult:
        """:meth:`DurableBroker.submit`, then wake the long-polls (the pool may now hold Φ)."""
        result = self.broker.submit(rollouts, wire=wire)
        if result.accepted:
            self._wake()
        return result

    def _wake(self) -> None:
        self._submitted.set()
        self._submitted = asyncio.Event()

    # ----------------------------------------------------------------- RPCs

    async def LeasePrompts(self, request: broker_pb2.LeaseRequest,
                           context: grpc.aio.ServicerContext) -> broker_pb2.LeaseReply:
        if request.max_groups < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_groups must be at least 1, got 0")
        self.generator_versions[request.generator_id] = request.policy_version
        result = self.broker.lease(request.generator_id, request.max_groups, release_held=request.release_held)
        if result.released:
            logger.info("%s restarted: %d group(s) leased to its previous process go back to the queue",
                        request.generator_id, result.released)
        core = self.broker.core
        short = result.groups.num_rows < request.max_groups
        return broker_pb2.LeaseReply(
            groups=pack_batch(result.groups, PROMPT_GROUP),
            backpressure=result.backpressure,
            retry_after_s=result.retry_after_s or (self.retry_after_s if short else 0.0),
            policy_version=result.policy_version,
            # An open lease may still expire and requeue its prompt, so the work is not over while any is open.
            prompts_exhausted=core.prompts_exhausted and core.leased_groups == 0,
        )

    async def SubmitRollouts(self, request: broker_pb2.SubmitRolloutsRequest,
                             context: grpc.aio.ServicerContext) -> broker_pb2.SubmitRolloutsReply:
        batch = unpack_batch(request.rollouts, ROLLOUT)
        result = self.submit(batch, wire=request.rollouts.ipc)
        if result.duplicates or result.late:
            logger.info("%s: %d duplicate and %d late rollout(s) refused", request.submitter_id or "a submitter",
                        result.duplicates, result.late)
        return broker_pb2.SubmitRolloutsReply(accepted=result.accepted, duplicates=result.duplicates,
                                              late=result.late)

    async def NextTrainBatch(self, request: broker_pb2.NextTrainBatchRequest,
                             context: grpc.aio.ServicerContext) -> broker_pb2.TrainBatchReply:
        if not (math.isfinite(request.wait_s) and request.wait_s >= 0):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"wait_s must be a finite number of seconds >= 0, got {request.wait_s}")
        self._apply_version(request.learner_version)
        clock = asyncio.get_running_loop()
        deadline = clock.time() + _bounded_wait(request.wait_s, context.time_remaining())
        while (batch := self.broker.train_batch(request.step_id)) is None:
            remaining = deadline - clock.time()
            if remaining <= 0 or self._closing:
                return broker_pb2.TrainBatchReply(ready=False)
            try:
                await asyncio.wait_for(self._submitted.wait(), min(remaining, self.poll_s))
            except asyncio.TimeoutError:
                pass
        return broker_pb2.TrainBatchReply(
            ready=True,
            batch=common_pb2.ArrowBatch(ipc=batch.to_ipc(), schema=TRAIN_BATCH.tag, num_rows=batch.num_sequences),
            step_id=batch.step_id,
        )

    async def AcknowledgeSteps(self, request: broker_pb2.AcknowledgeStepsRequest,
                               context: grpc.aio.ServicerContext) -> broker_pb2.AcknowledgeStepsReply:
        self.broker.acknowledge(request.through_step_id)
        return broker_pb2.AcknowledgeStepsReply(acknowledged_step=self.broker.acknowledged,
                                                outbox_steps=len(self.broker.outbox_steps))

    async def ReportPolicyVersion(self, request: broker_pb2.PolicyVersion,
                                  context: grpc.aio.ServicerContext) -> broker_pb2.BrokerStatus:
        self._apply_version(request.version)
        return self._status()

    async def GetStatus(self, request: common_pb2.StatusRequest,
                        context: grpc.aio.ServicerContext) -> broker_pb2.BrokerStatus:
        return self._status()

    # ----------------------------------------------------------------- helpers

    def _apply_version(self, version: int) -> None:
        # The contract ignores an older version (a late report from a restarted learner) instead of refusing it,
        # and the same version again changes nothing, so neither reaches the core or the journal.
        if version > self.broker.core.policy_version:
            dropped = self.broker.set_policy_version(version)
            if dropped:
                logger.info("policy version %d: %d pooled rollout(s) became stale", version, dropped)

    def _status(self) -> broker_pb2.BrokerStatus:
        core = self.broker.core
        counts = core.ledger.snapshot()
        return broker_pb2.BrokerStatus(
            policy_version=core.policy_version,
            steps_emitted=core.steps_emitted,
            acknowledged_step=self.broker.acknowledged,
            outbox_steps=len(self.broker.outbox_steps),
            queued_prompts=core.queued_prompts,
            prompts_exhausted=core.prompts_exhausted,
            leased_groups=core.leased_groups,
            pool_rollouts=core.pool_rollouts,
            pool_tokens=core.pool_tokens,
            pending_rollouts=core.pending_rollouts,
            pending_tokens=core.pending_tokens,
            rollouts_by_outcome=counts["rollouts"],
            tokens_by_outcome=counts["tokens"],
            rejected_rollouts=counts["rejected_rollouts"],
            rejected_tokens=counts["rejected_tokens"],
            injected_rollouts_by_outcome=dict(core.injected_rollouts),
        )


def _bounded_wait(wait_s: float, time_remaining: float | None) -> float:
    """``wait_s``, cut short so that a "not ready" reply is sent before the call's deadline."""
    if time_remaining is None:
        return wait_s
    return max(0.0, min(wait_s, time_remaining - DEADLINE_MARGIN_S))


async def serve_broker(service: BrokerService, **server_kwargs: Any) -> Server:
    """Start a gRPC server for ``service`` (health, reflection, auth as in :func:`ring_async.transport.start_server`)
    with the broker errors mapped to their status codes, and start its lease expiry. To stop: ``await
    service.close()``, then ``await server.stop()``; the broker itself is closed by its owner."""
    server = await start_server([service], service_errors=ERROR_STATUS, **server_kwargs)
    service.start()
    return server
