"""Errors of the reward verifiers: bad input from a user (a malformed tests file, an unknown reward type)."""

from __future__ import annotations

from ring_async.errors import RingAsyncError


class VerifierError(RingAsyncError):
    """A verification request is invalid: the message says which field and why."""


class VerifierBusyError(VerifierError):
    """Admitting a request would take the verifier past a bound on pending work: retry later, or split the batch."""


class VerifierClosedError(VerifierError):
    """The verifier was closed and scores nothing more."""


class TestsFormatError(VerifierError):
    """A tests file does not follow the documented format (docs/verifiers.md, "Tests file format")."""

    __test__ = False  # not a pytest test class, despite the name
