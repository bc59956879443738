"""The interface every generation engine implements (torch on CPU/GPU, vLLM on GPU).

Requests go in with :meth:`GenerationEngine.submit` (non-blocking); finished samples come out of one stream,
:meth:`GenerationEngine.completed`, in the order they finish, each as soon as it is done. Weight updates arrive as
buckets (:mod:`ring_async.engines.generation.weights`) and are applied atomically between decoding steps. The stream
has a single consumer (the generation loop, or :meth:`generate` in tests and benchmarks).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import AsyncIterable, AsyncIterator, Iterable, Sequence

from ring_async.engines.generation.errors import EngineUnavailableError
from ring_async.engines.generation.types import CompletedSample, EngineStats, GroupRequest
from ring_async.engines.generation.weights import WeightBucket, WeightUpdateReport


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class GenerationEngine(ABC):
    name = "engine"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[CompletedSample | _Failed] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stash: list[CompletedSample] = []
        self.outstanding = 0  # samples submitted and not yet delivered

    # ---------------------------------------------------------------- to implement

    @property
    @abstractmethod
    def policy_version(self) -> int: ...

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def submit(self, request: GroupRequest) -> None:
        """Queue a group for generation; raises :class:`RequestError` at once for a request it cannot serve."""

    @abstractmethod
    def abort(self, group_id: str) -> None:
        """Stop a group: its unfinished samples come back with finish reason "abort"."""

    @abstractmethod
    def abort_started_before(self, version: int) -> None:
        """Stop every running sample that began under a policy version older than ``version``: each comes back with
        finish reason "abort" and what it generated so far. Samples not started yet are left alone (they begin under
        the served version)."""

    @abstractmethod
    async def update_weights(
        self, buckets: AsyncIterable[WeightBucket] | Iterable[WeightBucket], *, timeout_s: float | None = None
    ) -> WeightUpdateReport:
        """Receive a versioned update and apply it between decoding steps; returns what was loaded.

        Raises :class:`WeightUpdateError` (the engine keeps serving its version) for a bad bucket, and
        :class:`WeightUpdateTimeout` when the whole update does not complete within ``timeout_s``.
        """

    @abstractmethod
    async def pause(self) -> None:
        """Stop decoding between steps (in-flight samples are kept and resume later)."""

    @abstractmethod
    async def resume(self) -> None: ...

    @property
    @abstractmethod
    def paused(self) -> bool: ...

    @abstractmethod
    def stats(self) -> EngineStats: ...

    # ---------------------------------------------------------------- the completion stream

    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()

    def _expect(self, request: GroupRequest) -> None:
        self.outstanding += request.sampling.n

    def _deliver_many(self, samples: Sequence[CompletedSample]) -> None:
        """Hand finished samples to the event loop (safe from any thread)."""
        if samples and self._loop is not None:
            self._loop.call_soon_threadsafe(self._put_all, list(samples))

    def _put_all(self, samples: list[CompletedSample]) -> None:
        for sample in samples:
            self._queue.put_nowait(sample)

    def _fail(self, error: BaseException) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, _Failed(error))

    async def next_completed(self, timeout: float | None = None) -> CompletedSample | None:
        """The next finished sample, or None when ``timeout`` seconds pass without one."""
        if self._stash:
            sample = self._stash.pop(0)
            return sample
        if self._queue is None:
            raise EngineUnavailableError(f"the {self.name} engine was not started")
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout) if timeout is not None else await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, _Failed):
            self._queue.put_nowait(item)  # every later reader fails the same way
            raise EngineUnavailableError(f"the {self.name} engine stopped after an error: {item.error!r}") from item.error
        self.outstanding -= 1
        return item

    async def completed(self) -> AsyncIterator[CompletedSample]:
        """Finished samples, forever, in the order they finish."""
        while True:
            sample = await self.next_completed()
            if sample is not None:
                yield sample

    async def generate(self, requests: Sequence[GroupRequest]) -> list[CompletedSample]:
        """Submit ``requests`` and wait for all their samples (samples of other groups are kept for later readers)."""
        wanted = {r.group_id: r.sampling.n for r in requests}
        for request in requests:
            self.submit(request)
        results: list[CompletedSample] = []
        others: list[CompletedSample] = []
        try:
            while sum(wanted.values()):
                sample = await self.next_completed()
                if sample is None:
                    continue
                if wanted.get(sample.group_id):
                    wanted[sample.group_id] -= 1
                    results.append(sample)
                else:
                    others.append(sample)
        finally:
            self._stash.extend(others)
        return results

    async def __aenter__(self) -> "GenerationEngine":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
