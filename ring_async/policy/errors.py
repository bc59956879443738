"""Errors raised for a policy folder that cannot be loaded or a model config that cannot be built."""

from __future__ import annotations

from ring_async.errors import RingAsyncError


class PolicyError(RingAsyncError):
    """A policy folder is missing, incomplete or not loadable by transformers. The message names the folder."""
