"""Calling every peer of one role at once: verifiers, generators or learners, each a name and a stub.

Control's calls fan out (a reward to every verifier, a pause to every generator, a status request to everyone).
They run concurrently, so the slowest peer bounds the call rather than the sum of them, and one failed peer does not
hide what the others answered: the caller decides whether a failure is an error (Pause) or a note (GetStatus).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Mapping, TypeVar

import grpc

from ring_async.control.errors import PeerFailure

S = TypeVar("S")
R = TypeVar("R")


async def call_all(peers: Mapping[str, S], call: Callable[[S], Awaitable[R]]
                   ) -> tuple[dict[str, R], list[PeerFailure]]:
    """``call`` on every peer concurrently: the replies by name (in ``peers`` order) and the failed calls.

    Only gRPC errors count as failures; anything else is a bug and is raised."""
    names = list(peers)
    results = await asyncio.gather(*(call(peers[name]) for name in names), return_exceptions=True)
    replies: dict[str, R] = {}
    failures: list[PeerFailure] = []
    for name, result in zip(names, results):
        if isinstance(result, grpc.aio.AioRpcError):
            failures.append(PeerFailure.of(name, result))
        elif isinstance(result, BaseException):
            raise result
        else:
            replies[name] = result
    return replies, failures
