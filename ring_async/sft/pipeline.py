"""The distillation stage of a run, end to end and cached: initial policy -> tasks -> SFT -> selected checkpoint.

Each step is an artifact in the cache keyed by what determines it, so a second run of the same configuration (the
demo after a test, a learner after the demo) returns in seconds. :func:`prepare_policy` is what the RL stage calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ring_async.cache import ArtifactCache
from ring_async.config import RingConfig
from ring_async.policy.embedded import initial_policy_path, policy_material
from ring_async.sft.selection import SelectionReport, read_report, select_checkpoint
from ring_async.sft.trainer import CHECKPOINTS_DIR, run_sft
from ring_async.tasks.dataset import load_splits, tasks_material
from ring_async.tasks.splits import TaskSplits

# Bump when SFT or the probe changes what they produce for the same inputs.
SFT_FORMAT = 1
SELECTION_FORMAT = 1


def sft_material(config: RingConfig) -> dict[str, Any]:
    return {"format": SFT_FORMAT, "policy": policy_material(config), "tasks": tasks_material(config),
            "sft": config.sft.model_dump(mode="json"), "seed": config.run.seed,
            "max_length": config.model.max_length}


def selection_material(config: RingConfig) -> dict[str, Any]:
    return {"format": SELECTION_FORMAT, "sft": sft_material(config),
            "selection": config.checkpoint_selection.model_dump(mode="json")}


def sft_run(config: RingConfig, splits: TaskSplits | None = None, progress: bool = True,
            cache: ArtifactCache | None = None) -> Path:
    """The folder of this configuration's SFT run (``checkpoints/step-NNNNNN/`` inside), trained when missing."""
    cache = cache or ArtifactCache(config.cache)
    policy = initial_policy_path(config, cache)

    def build(out: Path) -> None:
        train = (splits or load_splits(config, cache)).train
        run_sft(policy, train, out, config.sft, seed=config.run.seed, max_length=config.model.max_length,
                progress=progress)

    return cache.get_or_build("sft", sft_material(config), build)


def selected_checkpoint(config: RingConfig, progress: bool = True, cache: ArtifactCache | None = None) -> SelectionReport:
    """The entropy-selected SFT checkpoint of this configuration (SFT and selection run when missing)."""
    cache = cache or ArtifactCache(config.cache)
    splits = load_splits(config, cache)
    run = sft_run(config, splits, progress, cache)

    def build(out: Path) -> None:
        select_checkpoint(run / CHECKPOINTS_DIR, splits.heldout, config.checkpoint_selection, out,
                          seed=config.run.seed, progress=progress)

    folder = cache.get_or_build("selection", selection_material(config), build)
    report = read_report(folder)
    if report.plot:  # written inside the build's temporary folder, which the cache renamed into place
        report.plot = str(folder / Path(report.plot).name)
    # The report names checkpoints by the paths they had when it was written; re-root them in this cache (which may
    # have been moved or mounted elsewhere since).
    rerooted = {m.path: str(run / CHECKPOINTS_DIR / Path(m.path).name) for m in report.checkpoints}
    report.checkpoints = [dataclasses.replace(m, path=rerooted[m.path]) for m in report.checkpoints]
    report.chosen = dataclasses.replace(report.chosen, path=rerooted[report.chosen.path])
    return report


@dataclass(frozen=True)
class PreparedPolicy:
    """What the RL stage starts from."""

    path: Path  # the selected SFT checkpoint (a policy folder)
    initial_path: Path  # the policy before SFT
    selection: SelectionReport
    splits: TaskSplits


def prepare_policy(config: RingConfig, progress: bool = True) -> PreparedPolicy:
    cache = ArtifactCache(config.cache)
    report = selected_checkpoint(config, progress, cache)
    return PreparedPolicy(report.path, initial_policy_path(config, cache), report, load_splits(config, cache))
