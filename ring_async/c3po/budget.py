"""C3PO token-budget selection: which responses (and how much of the last one) fill a step of Φ loss tokens.

Candidates arrive already ordered (oldest completed group first, a group in its own order). Responses are taken
greedily in that order until their cumulative length reaches Φ:

- ``exact`` (the paper): the response that straddles Φ is cut token-exactly, so exactly Φ tokens carry loss;
- ``whole``: the straddling response is taken whole, so the step overshoots Φ by less than one response.

Either way the loss is normalised by Φ, not by the tokens actually taken (see ``ring_async.c3po.loss``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

CutMode = Literal["exact", "whole"]


@dataclass(frozen=True)
class Selection:
    """The first ``count`` candidates are taken; the last of them keeps only ``last_take`` of its tokens."""

    count: int
    last_take: int
    tokens: int

    def take(self, index: int, length: int) -> int:
        """Loss-bearing tokens of candidate ``index`` (of ``length`` tokens) under this selection."""
        if index >= self.count:
            return 0
        return self.last_take if index == self.count - 1 else length


def select_budget(lengths: Sequence[int] | np.ndarray, budget: int, cut: CutMode = "exact") -> Selection | None:
    """Fill ``budget`` tokens from candidates of the given lengths, in order; None if they hold fewer tokens."""
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.size and lens.min() < 0:
        raise ValueError("candidate lengths must be non-negative")
    cumulative = np.cumsum(lens)
    if not cumulative.size or cumulative[-1] < budget:
        return None
    # Index of the first candidate whose cumulative length reaches the budget: the straddler.
    last = int(np.searchsorted(cumulative, budget, side="left"))
    before = int(cumulative[last - 1]) if last else 0
    if cut == "exact":
        return Selection(count=last + 1, last_take=budget - before, tokens=budget)
    if cut == "whole":
        return Selection(count=last + 1, last_take=int(lens[last]), tokens=int(cumulative[last]))
    raise ValueError(f"unknown cut mode {cut!r}")
