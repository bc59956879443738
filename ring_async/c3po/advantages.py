"""GRPO group-normalised advantages (DESIGN §2).

A_i = (R_i - mean(R)) / (std(R) + eps), one value per response, applied to every token of it. Computed on the full
group (masked members excluded) *before* C3PO selection, so a cut never changes an advantage. ``std`` is the sample
standard deviation (ddof=1), as common GRPO implementations use; a group of one has zero advantage.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

AdvantageNorm = Literal["std", "none"]


def group_advantages(rewards: Sequence[float] | np.ndarray, norm: AdvantageNorm = "std", eps: float = 1e-6) -> np.ndarray:
    """Advantages of one group's rewards (float64)."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards of one group must be 1-D, got shape {r.shape}")
    if r.size < 2:
        return np.zeros_like(r)
    centred = r - r.mean()
    if norm == "none":
        return centred
    return centred / (r.std(ddof=1) + eps)


def is_zero_advantage(rewards: Sequence[float] | np.ndarray) -> bool:
    """True when every reward in the group is equal: no learning signal, whatever the normalisation."""
    r = np.asarray(rewards, dtype=np.float64)
    return r.size < 2 or bool(np.all(r == r[0]))
