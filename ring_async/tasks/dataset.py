"""The tasks of a run: a user's files (``tasks.train_files``/``heldout_files``) or synthetic math and code tasks,
generated once per configuration and kept in the artifact cache as JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ring_async.cache import ArtifactCache, file_fingerprint
from ring_async.config import RingConfig, TasksConfig
from ring_async.tasks.code_tasks import code_task
from ring_async.tasks.io import read_tasks, write_tasks
from ring_async.tasks.math_tasks import math_task
from ring_async.tasks.splits import TaskSplits, disjoint, split_records, synthesize

# Bump when a generator changes the tasks it produces for a given config and seed.
TASKS_FORMAT = 1
TRAIN_FILE = "train.jsonl"
HELDOUT_FILE = "heldout.jsonl"


def synthetic_splits(tasks: TasksConfig, seed: int) -> TaskSplits:
    """Math then code tasks; each domain has its own random stream, so changing one count leaves the other alone."""
    math = synthesize(lambda rng: math_task(rng, tasks.math_difficulty, tasks.linear_fraction), tasks.math_train,
                      tasks.math_heldout, f"math:{seed}", tasks.heldout_share, "math tasks")
    code = synthesize(lambda rng: code_task(rng, tasks.code_difficulty), tasks.code_train, tasks.code_heldout,
                      f"code:{seed}", tasks.heldout_share, "code tasks")
    return TaskSplits(math.train + code.train, math.heldout + code.heldout)


def tasks_material(config: RingConfig) -> dict[str, Any]:
    tasks = config.tasks
    if tasks.train_files:
        return {"train_files": [file_fingerprint(p) for p in tasks.train_files],
                "heldout_files": [file_fingerprint(p) for p in tasks.heldout_files],
                "heldout_share": tasks.heldout_share}
    return {"format": TASKS_FORMAT, "tasks": tasks.model_dump(mode="json"), "seed": config.run.seed}


def _read_all(paths: list[str]) -> list:
    return [record for path in paths for record in read_tasks(path)]


def task_files(config: RingConfig, cache: ArtifactCache | None = None) -> tuple[Path, Path]:
    """(train, held-out) synthetic task files in the cache (built when missing)."""
    cache = cache or ArtifactCache(config.cache)

    def build(out: Path) -> None:
        splits = synthetic_splits(config.tasks, config.run.seed)
        write_tasks(splits.train, out / TRAIN_FILE)
        write_tasks(splits.heldout, out / HELDOUT_FILE)

    folder = cache.get_or_build("tasks", tasks_material(config), build)
    return folder / TRAIN_FILE, folder / HELDOUT_FILE


def load_splits(config: RingConfig, cache: ArtifactCache | None = None) -> TaskSplits:
    """The train and held-out tasks of this configuration; they never share a problem."""
    tasks = config.tasks
    if tasks.train_files:
        if tasks.heldout_files:
            return disjoint(_read_all(tasks.train_files), _read_all(tasks.heldout_files))
        return split_records(_read_all(tasks.train_files), tasks.heldout_share)
    train, heldout = task_files(config, cache)
    return TaskSplits(read_tasks(train), read_tasks(heldout))
