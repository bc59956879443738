"""Errors of the generation engines: bad requests, refused weight updates, and an engine that cannot serve."""

from __future__ import annotations

from ring_async.errors import RingAsyncError


class GenerationError(RingAsyncError):
    """Base class of generation errors caused by bad input or a broken contract."""


class RequestError(GenerationError):
    """A generation request is invalid (bad sampling parameters, empty or too long prompt, duplicate group id)."""


class EngineUnavailableError(GenerationError):
    """The requested engine cannot run here (vLLM not installed, no GPU) or the engine was closed."""


class WeightUpdateError(GenerationError):
    """A weight update was refused: a bucket is malformed, corrupted or does not match the served model.

    The engine keeps serving the version it had; nothing of the refused update is applied.
    """


class WeightUpdateTimeout(WeightUpdateError):
    """A weight update did not complete within its timeout; the engine keeps serving the version it had."""


class StaleWeightVersionError(WeightUpdateError):
    """A weight update carries a version that is not newer than the one being served."""
