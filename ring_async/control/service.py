"""The Control gRPC service (proto/ring_async/v1/control.proto): the public face of a running system.

It runs in the broker's process and holds the broker's :class:`~ring_async.broker.service.BrokerService`: prompts go
into the broker in process (journaled like every other input) and its status is read there. Everything else is a
gRPC call to the other roles, given as channels by name (the actor ids): verifiers (rewards, rollout streams),
generators (pause, resume) and learners (checkpoints), and all of them for GetStatus.

- ``SubmitPrompts``: the whole request is checked first (:mod:`ring_async.control.prompts`); one bad prompt refuses
  all with INVALID_ARGUMENT naming it. The ids come back in request order.
- ``SubmitRewards``: checked whole (INVALID_ARGUMENT for a repeated id or a non-finite reward), then sent to every
  verifier, since a waiting rollout lives in the verifier that took it; accepted and already_rewarded are summed, and
  an id no verifier knows is unknown. A verifier that fails the call fails this one with its status; retrying is safe.
- ``StreamRollouts``: every verifier's stream relayed into one bounded queue per client
  (:mod:`ring_async.control.streams`); a slow client loses its oldest scored batches (``skipped``), never a row
  waiting for a reward, and never slows a verifier.
- ``GetStatus``: the broker's status, every learner, generator and verifier that answers within
  ``status_timeout_s`` (the others are listed in ``unreachable``, not an error), the pause state, and rates.
- ``Pause`` / ``Resume``: every generator's, and the system's pause state (kept here: a generator shows its own in
  GetStatus). ``Checkpoint``: every learner's (data-parallel ranks write one checkpoint together), the first one's
  reply.

Calls to peers fail with the peer's own status code and a message naming it (:class:`PeerError`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

import grpc

from ring_async.broker.ledger import TRAINED
from ring_async.broker.service import BrokerService
from ring_async.control.errors import ControlRequestError, PeerError
from ring_async.control.peers import call_all
from ring_async.control.prompts import prompts_from_request
from ring_async.control.rates import CounterRate
from ring_async.control.streams import relay
from ring_async.transport import Server, start_server
from ring_async.v1 import (
    common_pb2,
    control_pb2,
    control_pb2_grpc,
    generator_pb2_grpc,
    learner_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
)
from ring_async.verifiers.errors import VerifierBusyError, VerifierError
from ring_async.verifiers.feed import DEFAULT_MAX_BATCHES, DEFAULT_MAX_BYTES, StreamFeed
from ring_async.verifiers.service import reward_answers, reward_type_filter

logger = logging.getLogger(__name__)

ERROR_STATUS: Mapping[type, grpc.StatusCode] = {
    ControlRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    VerifierError: grpc.StatusCode.INVALID_ARGUMENT,  # the verifiers' checks of a reward or stream request
    VerifierBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,  # a stream whose reader fell behind (StreamOverflowError)
}

TRAINED_WINDOW_S = 60.0  # trained_tokens_per_s: "over the last minute"
STEPS_WINDOW_S = 300.0  # steps_per_min: "over the last few minutes"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _peer_status(handler: Handler) -> Handler:
    """End the call with the failed peer's status code when ``handler`` raises PeerError (the error interceptor maps
    by class, and a PeerError's code depends on what the peer said)."""

    @functools.wraps(handler)
    async def call(self: "ControlService", request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except PeerError as err:
            logger.warning("%s", err)  # the operator should see a peer failing, not only the client
            await context.abort(err.code, str(err))

    return call  # type: ignore[return-value]


class ControlService(control_pb2_grpc.ControlServicer):
    """Control over ``broker`` (in process) and channels to the other roles, by actor id. The caller owns the
    channels and the broker. ``status_timeout_s`` bounds each peer's GetStatus, ``call_timeout_s`` the other calls
    but Checkpoint (``checkpoint_timeout_s``: writing a checkpoint of a large model takes a while);
    ``stream_queue_batches`` and ``stream_queue_bytes`` bound each StreamRollouts client's queue of scored batches;
    ``rate_sample_s`` is how often the broker's counters are sampled for the rates (see :meth:`start`)."""

    def __init__(self, broker: BrokerService, *, run_id: str,
                 verifiers: Mapping[str, grpc.aio.Channel] | None = None,
                 generators: Mapping[str, grpc.aio.Channel] | None = None,
                 learners: Mapping[str, grpc.aio.Channel] | None = None,
                 status_timeout_s: float = 2.0, call_timeout_s: float = 30.0, checkpoint_timeout_s: float = 600.0,
                 stream_queue_batches: int = DEFAULT_MAX_BATCHES, stream_queue_bytes: int = DEFAULT_MAX_BYTES,
                 rate_sample_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.broker = broker
        self.run_id = run_id
        self.verifiers = {name: verifier_pb2_grpc.VerifierStub(c) for name, c in (verifiers or {}).items()}
        self.generators = {name: generator_pb2_grpc.GeneratorStub(c) for name, c in (generators or {}).items()}
        self.learners = {name: learner_pb2_grpc.LearnerStub(c) for name, c in (learners or {}).items()}
        self.status_timeout_s = status_timeout_s
        self.call_timeout_s = call_timeout_s
        self.checkpoint_timeout_s = checkpoint_timeout_s
        self.stream_queue_batches = stream_queue_batches
        self.stream_queue_bytes = stream_queue_bytes
        self.rate_sample_s = rate_sample_s
        self._clock = clock
        self._started = clock()
        self.pause_state = common_pb2.PauseState(paused=False)
        self._steps = CounterRate(STEPS_WINDOW_S)
        self._trained_tokens = CounterRate(TRAINED_WINDOW_S)
        self._sample()
        self._sampler: asyncio.Task[None] | None = None
        self._feeds: set[StreamFeed[common_pb2.ArrowBatch]] = set()

    def set_peer(self, role: str, name: str, channel: grpc.aio.Channel) -> None:
        """Call peer ``name`` of ``role`` over ``channel`` from now on (it was restarted at a new address)."""
        stubs = {"verifier": (self.verifiers, verifier_pb2_grpc.VerifierStub),
                 "generator": (self.generators, generator_pb2_grpc.GeneratorStub),
                 "learner": (self.learners, learner_pb2_grpc.LearnerStub)}
        if role in stubs:  # the broker is Control's own process: it never moves apart from it
            table, stub = stubs[role]
            table[name] = stub(channel)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Sample the broker's counters every ``rate_sample_s`` (inside the serving event loop), so the rates cover
        their whole window even when GetStatus is called rarely. Starting twice is a no-op."""
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.get_running_loop().create_task(self._sample_forever(), name="control-rates")

    async def close(self) -> None:
        """Stop sampling and end the open rollout streams; call it before stopping the server."""
        for feed in self._feeds:
            feed.close()
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.rate_sample_s)
            self._sample()

    def _sample(self) -> None:
        core = self.broker.broker.core
        now = self._clock()
        self._steps.add(now, core.steps_emitted)
        self._trained_tokens.add(now, core.ledger.tokens[TRAINED])

    # ----------------------------------------------------------------- prompts and rewards

    async def SubmitPrompts(self, request: control_pb2.SubmitPromptsRequest,
                            context: grpc.aio.ServicerContext) -> control_pb2.SubmitPromptsReply:
        prompts = prompts_from_request(request)
        return control_pb2.SubmitPromptsReply(prompt_ids=self.broker.broker.inject(prompts))

    @_peer_status
    async def SubmitRewards(self, request: verifier_pb2.SubmitRewardsRequest,
                            context: grpc.aio.ServicerContext) -> verifier_pb2.SubmitRewardsReply:
        # Checked here before any verifier sees it, so none applies part of a request another would refuse.
        answers = reward_answers(request)
        replies, failures = await call_all(
            self.verifiers, lambda stub: stub.SubmitRewards(request, timeout=self.call_timeout_s))
        if failures:
            raise PeerError("SubmitRewards", failures,
                            "rewards the other verifiers accepted stay accepted: retrying the whole request is safe")
        # Each rollout waits in one verifier; the others call it unknown. Unknown overall = unknown to all of them.
        unknown_to = [set(reply.unknown_rollout_ids) for reply in replies.values()]
        unknown = [rollout_id for rollout_id, _ in answers if all(rollout_id in ids for ids in unknown_to)]
        return verifier_pb2.SubmitRewardsReply(
            accepted=sum(reply.accepted for reply in replies.values()),
            already_rewarded=sum(reply.already_rewarded for reply in replies.values()),
            unknown=len(unknown), unknown_rollout_ids=unknown)

    async def StreamRollouts(self, request: verifier_pb2.StreamRolloutsRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[verifier_pb2.StreamRolloutsReply]:
        reward_type_filter(request.reward_types)  # a typo is one INVALID_ARGUMENT here, not a failure per verifier
        feed: StreamFeed[common_pb2.ArrowBatch] = StreamFeed(self.stream_queue_batches, self.stream_queue_bytes)
        self._feeds.add(feed)
        relays = [asyncio.create_task(relay(name, stub, request, feed), name=f"control-stream-{name}")
                  for name, stub in self.verifiers.items()]
        try:
            while (item := await feed.get()) is not None:
                rollouts, skipped = item
                yield verifier_pb2.StreamRolloutsReply(rollouts=rollouts, skipped=skipped)
        except PeerError as err:
            logger.warning("%s", err)
            await context.abort(err.code, str(err))
        finally:
            self._feeds.discard(feed)
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    # ----------------------------------------------------------------- status

    async def GetStatus(self, request: common_pb2.StatusRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.SystemStatus:
        # The Broker service's own handler, so the broker's status has one definition (it does not use context).
        broker = await self.broker.GetStatus(request, context)

        def ask(stub: Any) -> Awaitable[Any]:
            return stub.GetStatus(common_pb2.StatusRequest(), timeout=self.status_timeout_s)

        (learners, lost_l), (generators, lost_g), (verifiers, lost_v) = await asyncio.gather(
            call_all(self.learners, ask), call_all(self.generators, ask), call_all(self.verifiers, ask))
        self._sample()
        core = self.broker.broker.core
        return control_pb2.SystemStatus(
            run_id=self.run_id,
            uptime_s=self._clock() - self._started,
            pause=self.pause_state,
            broker=broker,
            learners=learners.values(),
            generators=generators.values(),
            verifiers=verifiers.values(),
            unreachable={f.name: f"{f.code.name}: {f.details}" for f in (*lost_l, *lost_g, *lost_v)},
            max_staleness=core.config.algorithm.max_staleness,
            pool_staleness=core.pool_staleness(),
            generated_tokens_per_s=sum(g.tokens_per_s for g in generators.values()),
            trained_tokens_per_s=self._trained_tokens.per_second(TRAINED_WINDOW_S),
            steps_per_min=60.0 * self._steps.per_second(STEPS_WINDOW_S),
        )

    # ----------------------------------------------------------------- pause, resume, checkpoint

    @_peer_status
    async def Pause(self, request: common_pb2.PauseRequest,
                    context: grpc.aio.ServicerContext) -> common_pb2.PauseState:
        # Pausing a paused system updates the reason and keeps the time it first paused.
        paused_at = self.pause_state.paused_at_unix_s if self.pause_state.paused else time.time()
        self.pause_state = common_pb2.PauseState(paused=True, reason=request.reason, paused_at_unix_s=paused_at)
        _, failures = await call_all(
            self.generators,
            lambda stub: stub.Pause(common_pb2.PauseRequest(reason=request.reason), timeout=self.call_timeout_s))
        if failures:
            raise PeerError("Pause", failures, "the system is marked paused; pausing again is safe")
        return self.pause_state

    @_peer_status
    async def Resume(self, request: common_pb2.ResumeRequest,
                     context: grpc.aio.ServicerContext) -> common_pb2.PauseState:
        self.pause_state = common_pb2.PauseState(paused=False)
        _, failures = await call_all(
            self.generators, lambda stub: stub.Resume(common_pb2.ResumeRequest(), timeout=self.call_timeout_s))
        if failures:
            raise PeerError("Resume", failures, "the system is marked running; resuming again is safe")
        return self.pause_state

    @_peer_status
    async def Checkpoint(self, request: common_pb2.CheckpointRequest,
                         context: grpc.aio.ServicerContext) -> common_pb2.CheckpointReply:
        if not self.learners:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no learner is connected: nothing to checkpoint")
        replies, failures = await call_all(
            self.learners, lambda stub: stub.Checkpoint(request, timeout=self.checkpoint_timeout_s))
        if failures:
            raise PeerError("Checkpoint", failures)
        # The broker's journal needs no step here: every entry is flushed to the OS before its caller is answered.
        return next(iter(replies.values()))


async def serve_control(service: ControlService, *, auth_token: str, **server_kwargs: Any) -> Server:
    """Start a gRPC server for ``service`` (health, reflection, TLS as in :func:`ring_async.transport.start_server`)
    and its rate sampling. ``auth_token`` is required: Control is public, and every call must carry the token.
    To stop: ``await service.close()``, then ``await server.stop()``."""
    server = await start_server([service], auth_token=auth_token, service_errors=ERROR_STATUS, **server_kwargs)
    service.start()
    return server
