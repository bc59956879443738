"""Relaying the verifiers' rollout streams into one Control client's stream.

Each Control.StreamRollouts call subscribes to every verifier with the client's own request, so each verifier applies
the filters and, with pending_external_only, sends the snapshot of the rows waiting there at that moment: the
client's stream starts with every waiting row of the whole system. The relays copy the verifiers' messages (Arrow
bytes, not decoded) into the client's :class:`~ring_async.verifiers.feed.StreamFeed`; a verifier's own skip count is
added to the client's.
"""

from __future__ import annotations

import grpc

from ring_async.control.errors import PeerError, PeerFailure
from ring_async.v1 import common_pb2, verifier_pb2, verifier_pb2_grpc
from ring_async.verifiers.feed import StreamFeed

RECONNECT = "reconnect (a pending_external_only stream starts again with every rollout waiting)"


async def relay(name: str, stub: verifier_pb2_grpc.VerifierStub, request: verifier_pb2.StreamRolloutsRequest,
                feed: StreamFeed[common_pb2.ArrowBatch]) -> None:
    """Copy verifier ``name``'s stream into ``feed`` until it ends or this task is cancelled.

    A stream that breaks or ends closes ``feed`` with a PeerError: the client's stream then ends with that status
    instead of going on without one verifier's rollouts, unnoticed."""
    droppable = not request.pending_external_only
    call = stub.StreamRollouts(request)
    try:
        async for reply in call:
            feed.skip(reply.skipped)
            feed.put(reply.rollouts, reply.rollouts.num_rows, len(reply.rollouts.ipc), droppable=droppable)
    except grpc.aio.AioRpcError as err:
        feed.close(PeerError("the rollout stream", [PeerFailure.of(f"verifier {name}", err)], RECONNECT))
        return
    finally:
        call.cancel()
    feed.close(PeerError("the rollout stream", [PeerFailure(f"verifier {name}", grpc.StatusCode.UNAVAILABLE,
                                                            "its stream ended (the verifier is stopping)")],
                         RECONNECT))
