"""Where prompts come from: a dataset stream and prompts injected while the system runs.

The broker asks :class:`PromptQueue` for the next prompt to lease. Injected prompts carry a priority; the dataset
stream counts as priority 0. The highest priority goes first; at equal priority an injected prompt goes before the
dataset (someone asked for it explicitly), and injected prompts keep their arrival order. A prompt whose lease
expired is requeued ahead of every prompt of its priority, so expiry never starves it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

DATASET_PRIORITY = 0


@dataclass(frozen=True)
class Prompt:
    """One task: the prompt and what the verifier needs to score a response to it."""

    prompt_id: str
    prompt: str
    reward_type: str
    answer: str | None = None
    tests: str | None = None
    prompt_token_ids: tuple[int, ...] = ()
    priority: int = DATASET_PRIORITY
    group_size: int | None = None
    metadata: bytes | None = None
    injected: bool = False  # submitted while running (Control), not from the dataset: its outcomes are reported apart


class DatasetStream:
    """An endless, seeded stream over a finite prompt list: a new shuffle every epoch (or the file order)."""

    def __init__(self, prompts: Sequence[Prompt], seed: int = 0, shuffle: bool = True, epochs: int | None = None):
        self._prompts = list(prompts)
        self._rng = np.random.default_rng(seed)
        self._shuffle = shuffle
        self._epochs = epochs
        self.epoch = 0
        self._order: Iterator[int] = iter(())

    def __iter__(self) -> "DatasetStream":
        return self

    def __next__(self) -> Prompt:
        for index in self._order:
            return self._prompts[index]
        if not self._prompts or (self._epochs is not None and self.epoch >= self._epochs):
            raise StopIteration
        self.epoch += 1
        order = self._rng.permutation(len(self._prompts)) if self._shuffle else np.arange(len(self._prompts))
        self._order = iter(order.tolist())
        return next(self)


@dataclass(order=True)
class _Queued:
    sort_key: tuple[int, int, int]
    prompt: Prompt = field(compare=False)


class PromptQueue:
    """Injected prompts in a priority heap in front of the dataset stream."""

    def __init__(self, dataset: Iterator[Prompt] | None = None):
        self._dataset = dataset
        self._heap: list[_Queued] = []
        self._arrival = itertools.count()
        self._dataset_exhausted = dataset is None

    def inject(self, prompt: Prompt) -> None:
        # heapq pops the smallest key: negate priority; requeued (0) before fresh (1) within a priority.
        heapq.heappush(self._heap, _Queued((-prompt.priority, 1, next(self._arrival)), prompt))

    def requeue(self, prompt: Prompt) -> None:
        heapq.heappush(self._heap, _Queued((-prompt.priority, 0, next(self._arrival)), prompt))

    def __len__(self) -> int:
        """Prompts waiting in the injected queue (the dataset stream is not counted: it may be endless)."""
        return len(self._heap)

    @property
    def exhausted(self) -> bool:
        return self._dataset_exhausted and not self._heap

    def pop(self) -> Prompt | None:
        if self._heap and (self._dataset_exhausted or -self._heap[0].sort_key[0] >= DATASET_PRIORITY):
            return heapq.heappop(self._heap).prompt
        if not self._dataset_exhausted:
            assert self._dataset is not None
            try:
                return next(self._dataset)
            except StopIteration:
                self._dataset_exhausted = True
        return heapq.heappop(self._heap).prompt if self._heap else None
