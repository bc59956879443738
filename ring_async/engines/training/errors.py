"""Errors of the learner: a train batch it refuses, a step out of order, a checkpoint it cannot write or read."""

from __future__ import annotations

from ring_async.errors import RingAsyncError


class LearnerError(RingAsyncError):
    """Base class of learner errors caused by bad input or a broken contract; the learner keeps running."""


class BatchRejected(LearnerError):
    """A train batch is malformed or does not fit the model (token ids, logprobs, versions, Φ); nothing was trained."""


class StepOrderError(LearnerError):
    """A train batch's step id is not the next one: already trained (a replay) or one was skipped."""


class CheckpointError(LearnerError):
    """A checkpoint cannot be written (bad tag, one already there) or read (missing, incomplete, another model)."""


class PublishError(LearnerError):
    """New weights did not reach a generator (refused, unreachable, or past the publish timeout)."""


class CheckpointTagError(CheckpointError):
    """A checkpoint tag that is not a safe folder name."""
