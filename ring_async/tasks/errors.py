"""Errors raised for bad task data (a user's data set or a malformed file)."""

from __future__ import annotations

from ring_async.errors import RingAsyncError


class TaskFormatError(RingAsyncError):
    """A task file or record is malformed. The message names the file and the line (JSONL) or row (Parquet)."""
