"""Typed errors shared across ring-async.

Every error a user can provoke with bad input is a subclass of :class:`RingAsyncError`, so the CLI can turn it into
one line and a non-zero exit, and the gRPC services can map it to a status code with a message.
"""

from __future__ import annotations


class RingAsyncError(Exception):
    """Base class for errors caused by bad input or a broken contract (never by a bug in ring-async)."""


class ConfigError(RingAsyncError):
    """A configuration file or value is invalid. The message names the key and the offending value."""


class PayloadError(RingAsyncError):
    """An Arrow payload is truncated, corrupted, or does not carry the schema the receiver expects."""


class BrokerError(RingAsyncError):
    """A request to the broker is invalid (unknown group, bad sample index, inconsistent rollout)."""
