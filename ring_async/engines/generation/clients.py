"""The generator's view of its peers over gRPC: leasing from the Broker service, forwarding to a Verifier.

Both are thin: the loop (:mod:`.loop`) talks to anything with ``lease`` and to any ``forward`` callable, so the same
loop runs against the in-process broker core in tests and against the services in a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import grpc
import pyarrow as pa
import pyarrow.compute as pc

from ring_async.data.schemas import PROMPT_GROUP, ROLLOUT
from ring_async.transport import pack_batch, unpack_batch
from ring_async.v1 import broker_pb2, broker_pb2_grpc, verifier_pb2, verifier_pb2_grpc
# Rows a verifier hands back unscored: they wait for Control.SubmitRewards and reach the broker from there.
from ring_async.verifiers.verdicts import PENDING_EXTERNAL



@dataclass(frozen=True)
class Lease:
    groups: pa.RecordBatch
    backpressure: bool
    policy_version: int
    retry_after_s: float = 0.0
    prompts_exhausted: bool = False


class GrpcBrokerClient:
    """``lease`` over Broker.LeasePrompts, reporting the generator's loaded policy version. One per generator
    process: its first lease that reaches the broker asks it to release what this generator id held before (a
    restarted generator's lost groups come back at once instead of at the lease timeout)."""

    def __init__(self, channel: grpc.aio.Channel, policy_version: Callable[[], int] = lambda: -1,
                 timeout_s: float | None = None):
        self._stub = broker_pb2_grpc.BrokerStub(channel)
        self._policy_version = policy_version
        self._timeout_s = timeout_s
        self._first = True

    async def lease(self, generator_id: str, max_groups: int) -> Lease:
        reply = await self._stub.LeasePrompts(
            broker_pb2.LeaseRequest(
                generator_id=generator_id, max_groups=max_groups, policy_version=self._policy_version(),
                release_held=self._first,
            ),
            timeout=self._timeout_s,
        )
        self._first = False
        return Lease(
            groups=unpack_batch(reply.groups, PROMPT_GROUP),
            backpressure=reply.backpressure,
            policy_version=reply.policy_version,
            retry_after_s=reply.retry_after_s,
            prompts_exhausted=reply.prompts_exhausted,
        )


class VerifyThenSubmit:
    """A ``forward``: score the rollouts at a Verifier, then hand the scored ones to the Broker (rows waiting for an
    external reward stay with the verifier)."""

    def __init__(self, verifier: grpc.aio.Channel, broker: grpc.aio.Channel, submitter_id: str,
                 timeout_s: float | None = None):
        self._verifier = verifier_pb2_grpc.VerifierStub(verifier)
        self._broker = broker_pb2_grpc.BrokerStub(broker)
        self._submitter_id = submitter_id
        self._timeout_s = timeout_s

    def set_verifier(self, verifier: grpc.aio.Channel) -> None:
        self._verifier = verifier_pb2_grpc.VerifierStub(verifier)

    async def __call__(self, rollouts: pa.RecordBatch) -> broker_pb2.SubmitRolloutsReply | None:
        reply = await self._verifier.Verify(
            verifier_pb2.VerifyRequest(rollouts=pack_batch(rollouts, ROLLOUT)), timeout=self._timeout_s
        )
        scored = unpack_batch(reply.rollouts, ROLLOUT)
        scored = scored.filter(pc.not_equal(scored.column("verdict"), PENDING_EXTERNAL))
        if scored.num_rows == 0:
            return None
        return await self._broker.SubmitRollouts(
            broker_pb2.SubmitRolloutsRequest(rollouts=pack_batch(scored, ROLLOUT), submitter_id=self._submitter_id),
            timeout=self._timeout_s,
        )
