"""Train and held-out splits that never overlap.

A problem's split is a function of its content alone: the SHA-256 of its split key (``metadata.split_key`` when a
generator sets one, e.g. the arithmetic expression or the code template and its parameters; else the prompt text),
mapped to [0, 1), below ``heldout_share`` means held-out. So one problem can never be in both splits, whatever the
seed, the sizes or the phrasing ("Compute 3 + 4." and "What is 3 + 4?" share a split), and a held-out problem of
one run is held out in every run.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ring_async.errors import RingAsyncError
from ring_async.tasks.record import TaskRecord

log = logging.getLogger(__name__)

# Consecutive draws without a new problem after which a generator counts as exhausted at its difficulty.
EXHAUSTED_AFTER = 2000


class TaskGenerationError(RingAsyncError):
    """A synthetic split cannot be filled: the difficulty level has fewer distinct problems than asked for."""


@dataclass(frozen=True)
class TaskSplits:
    train: list[TaskRecord]
    heldout: list[TaskRecord]


def split_key(record: TaskRecord) -> str:
    key = record.metadata.get("split_key")
    return str(key) if key else f"prompt:{record.prompt}"


def is_heldout(record: TaskRecord, heldout_share: float) -> bool:
    digest = hashlib.sha256(split_key(record).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < heldout_share


def synthesize(
    make: Callable[[random.Random], TaskRecord], n_train: int, n_heldout: int, seed: str, heldout_share: float,
    name: str = "tasks",
) -> TaskSplits:
    """Draw tasks until both splits are full. Train keeps distinct prompts (rephrasings are useful augmentation);
    held-out keeps distinct problems (so accuracy is not weighted by duplicates)."""
    rng = random.Random(seed)
    train: dict[str, TaskRecord] = {}
    heldout: dict[str, TaskRecord] = {}
    stale = 0
    while len(train) < n_train or len(heldout) < n_heldout:
        record = make(rng)
        if is_heldout(record, heldout_share):
            target, key, limit = heldout, split_key(record), n_heldout
        else:
            target, key, limit = train, record.prompt, n_train
        if len(target) < limit and key not in target:
            target[key] = record
            stale = 0
            continue
        stale += 1
        if stale >= EXHAUSTED_AFTER:
            raise TaskGenerationError(
                f"only {len(train)} train and {len(heldout)} held-out distinct {name} exist at this difficulty "
                f"(asked {n_train} and {n_heldout}); lower the counts or raise the difficulty"
            )
    return TaskSplits(list(train.values()), list(heldout.values()))


def split_records(records: Sequence[TaskRecord], heldout_share: float) -> TaskSplits:
    """Split one data set by content hash."""
    train = [r for r in records if not is_heldout(r, heldout_share)]
    heldout = [r for r in records if is_heldout(r, heldout_share)]
    return TaskSplits(train, heldout)


def disjoint(train: Iterable[TaskRecord], heldout: Sequence[TaskRecord]) -> TaskSplits:
    """A user's own train and held-out files: train records that share a prompt or split key with a held-out
    record are dropped (held-out accuracy must measure unseen problems), and the number dropped is logged."""
    held_keys = {split_key(r) for r in heldout} | {r.prompt for r in heldout}
    kept, dropped = [], 0
    for record in train:
        if split_key(record) in held_keys or record.prompt in held_keys:
            dropped += 1
        else:
            kept.append(record)
    if dropped:
        log.warning("dropped %d train tasks that also appear in the held-out set", dropped)
    return TaskSplits(kept, list(heldout))
