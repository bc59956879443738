"""Errors of the Control service: a bad request, or a peer (verifier, generator, learner) that failed a call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import grpc

from ring_async.errors import RingAsyncError


class ControlRequestError(RingAsyncError):
    """A Control request is invalid (INVALID_ARGUMENT): the message names the prompt or field and why."""


@dataclass(frozen=True)
class PeerFailure:
    """One peer's failed call: which peer, and the status it failed with."""

    name: str
    code: grpc.StatusCode
    details: str

    @classmethod
    def of(cls, name: str, error: grpc.aio.AioRpcError) -> "PeerFailure":
        return cls(name, error.code(), error.details() or "")

    def __str__(self) -> str:
        return f"{self.name}: {self.code.name}: {self.details}"


class PeerError(RingAsyncError):
    """Calls to some peers failed. The Control handlers end the call with the first failure's status code (not a
    fixed one: a learner's FAILED_PRECONDITION "checkpoint already being written" must reach the client as such)."""

    def __init__(self, action: str, failures: Sequence[PeerFailure], note: str = "") -> None:
        self.failures = tuple(failures)
        message = f"{action} failed at {'; '.join(map(str, self.failures))}"
        super().__init__(f"{message}; {note}" if note else message)

    @property
    def code(self) -> grpc.StatusCode:
        return self.failures[0].code
