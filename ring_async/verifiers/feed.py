"""The per-subscriber queue behind the rollout streams (Verifier.StreamRollouts and Control.StreamRollouts).

A stream must never slow down the work it shows: a verifier scores and forwards rollouts whether or not anyone
watches, and one reward model reading slowly must not hold up another. So the producer side of a :class:`StreamFeed`
never waits. Items are either *droppable* (scored rollouts: a watcher that falls behind is better served by recent
ones) or not (rollouts waiting for an external reward: skipping one would leave it waiting until it times out). Past
``max_batches`` droppable items, or ``max_bytes`` of them (a batch count alone would let a slow reader of large
batches hold gigabytes), the oldest droppable ones are dropped and their rows counted; the next item handed to the
consumer carries that count (``skipped``). Items that are not droppable are never dropped one by one; they have bounds
of their own of the same size, and a reader that falls behind them loses its stream instead: the queue is emptied and
the stream ends with :class:`StreamOverflowError` (RESOURCE_EXHAUSTED), which loses nothing, since those rollouts keep
waiting where they are and a reconnecting pending_external_only stream starts with every one of them. (Without it a
reward model that stops reading would make its stream keep every rollout that ever waited, for as long as it stays
connected.)

Everything runs on one event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Generic, TypeVar

from ring_async.verifiers.errors import VerifierBusyError

T = TypeVar("T")

DEFAULT_MAX_BATCHES = 256
DEFAULT_MAX_BYTES = 64 << 20


class StreamOverflowError(VerifierBusyError):
    """A stream's reader fell behind the rollouts that must not be dropped: the stream ends; reconnect."""


@dataclass(frozen=True, slots=True)
class _Item(Generic[T]):
    value: T
    rows: int
    nbytes: int
    droppable: bool


class StreamFeed(Generic[T]):
    """A bounded queue of batches for one stream subscriber; see the module docstring."""

    def __init__(self, max_batches: int = DEFAULT_MAX_BATCHES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_batches < 1 or max_bytes < 1:
            raise ValueError(f"max_batches and max_bytes must be at least 1, got {max_batches} and {max_bytes}")
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._items: collections.deque[_Item[T]] = collections.deque()
        self._droppable = 0  # droppable items queued, and their bytes
        self._droppable_bytes = 0
        self._kept = 0  # items that are not droppable, and their bytes
        self._kept_bytes = 0
        self._skipped = 0  # rows dropped (here or upstream) since the consumer last got an item
        self.skipped_total = 0
        self._ready = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    def put(self, value: T, rows: int, nbytes: int = 0, *, droppable: bool = True) -> None:
        """Queue ``value`` (``rows`` rollouts, ``nbytes`` bytes) without waiting; a put after :meth:`close` is
        ignored. A droppable item larger than ``max_bytes`` on its own is still queued (alone among droppables)."""
        if self._closed:
            return
        if droppable:
            while self._droppable and (self._droppable >= self.max_batches
                                       or self._droppable_bytes + nbytes > self.max_bytes):
                self._drop_oldest_droppable()
            self._droppable += 1
            self._droppable_bytes += nbytes
        elif self._kept and (self._kept >= self.max_batches or self._kept_bytes + nbytes > self.max_bytes):
            self._overflow()
            return
        else:
            self._kept += 1
            self._kept_bytes += nbytes
        self._items.append(_Item(value, rows, nbytes, droppable))
        self._ready.set()

    def skip(self, rows: int) -> None:
        """Count ``rows`` dropped before they reached this feed (by an upstream feed); reported with the next item."""
        self._skipped += rows
        self.skipped_total += rows

    def close(self, error: BaseException | None = None) -> None:
        """No more items. The consumer still gets the queued ones, then ``None`` (or ``error`` raised)."""
        if not self._closed:
            self._closed = True
            self._error = error
            self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> tuple[T, int] | None:
        """The next item and the rows skipped since the previous one; ``None`` once closed and drained."""
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        self._forget(item)
        skipped, self._skipped = self._skipped, 0
        return item.value, skipped

    def _forget(self, item: _Item[T]) -> None:
        if item.droppable:
            self._droppable -= 1
            self._droppable_bytes -= item.nbytes
        else:
            self._kept -= 1
            self._kept_bytes -= item.nbytes

    def _overflow(self) -> None:
        kept, kept_bytes = self._kept, self._kept_bytes
        self._items.clear()
        self._droppable = self._droppable_bytes = self._kept = self._kept_bytes = 0
        self.close(StreamOverflowError(
            f"the stream's reader fell behind: {kept} batches ({kept_bytes} bytes) of rollouts waiting for a reward "
            f"were queued for it, its bound is {self.max_batches} batches or {self.max_bytes} bytes; read faster or "
            f"reconnect (a pending_external_only stream starts again with every rollout waiting)"))

    def _drop_oldest_droppable(self) -> None:
        for index, item in enumerate(self._items):
            if item.droppable:
                del self._items[index]
                self._forget(item)
                self.skip(item.rows)
                return
