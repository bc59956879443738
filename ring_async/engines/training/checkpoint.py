"""The learner's checkpoint layout: complete or absent, never half-written.

A checkpoint is a folder ``<checkpoint_dir>/<tag>/`` holding

- ``deepspeed/``: DeepSpeed's own checkpoint (module, optimizer, scheduler state of every rank);
- ``rng-rank<R>.pt``: each rank's Python, numpy and torch (CPU and CUDA) generator states;
- ``policy/``: the weights as an ordinary Hugging Face folder (generators, eval and ``from_pretrained`` load it);
- ``learner_state.json``: optimizer steps taken (= the policy version of the weights), the last broker step id
  trained on, the reference policy's path, the config digest.

It is written under a hidden ``.<tag>.partial`` name and renamed into place once complete, then ``latest`` (a file
holding the tag) is replaced atomically. A crash mid-write leaves only a partial folder, which is ignored and
cleared on the next write; resuming always reads a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ring_async.engines.training.errors import CheckpointError, CheckpointTagError

STATE_FILE = "learner_state.json"
LATEST_FILE = "latest"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
POLICY_DIR = "policy"
_TAG = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True)
class LearnerState:
    step: int  # optimizer steps taken; the weights are policy version ``step``
    last_consumed_step: int  # broker step id of the last train batch trained on; -1 if none
    reference_path: str | None
    config_digest: str
    world_size: int

    @classmethod
    def read(cls, folder: Path) -> "LearnerState":
        try:
            data = json.loads((folder / STATE_FILE).read_text())
            return cls(int(data["step"]), int(data["last_consumed_step"]), data.get("reference_path"),
                       str(data["config_digest"]), int(data["world_size"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{folder}: not a complete learner checkpoint ({STATE_FILE}: {err})") from None

    def write(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")


def check_tag(tag: str) -> str:
    if not _TAG.match(tag) or tag in (".", ".."):
        raise CheckpointTagError(f"checkpoint tag {tag!r}: use 1-128 letters, digits, '.', '_' or '-'")
    return tag


def partial_path(root: Path, tag: str) -> Path:
    return root / f".{tag}.partial"


def checkpoint_root(config) -> Path:
    """Where a run's learner checkpoints go: ``learner.checkpoint_dir``, else ``<run_dir>/checkpoints``."""
    lc = config.learner
    return Path(lc.checkpoint_dir) if lc.checkpoint_dir else Path(config.run.run_dir) / "checkpoints"


def latest(config) -> Path | None:
    """The run's latest checkpoint folder, or None before its first checkpoint."""
    root = checkpoint_root(config)
    return resolve(root) if (root / LATEST_FILE).is_file() else None


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder, or a checkpoint directory whose ``latest`` names one."""
    folder = Path(path)
    if (folder / LATEST_FILE).is_file():
        folder = folder / (folder / LATEST_FILE).read_text().strip()
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{path}: no learner checkpoint there (no {STATE_FILE}, no '{LATEST_FILE}' file)")
    return folder


def finish(root: Path, tag: str, keep: int) -> Path:
    """Move a complete partial checkpoint into place, point ``latest`` at it and delete all but ``keep`` newest."""
    final = root / tag
    os.replace(partial_path(root, tag), final)
    pointer = root / f".{LATEST_FILE}.tmp"
    pointer.write_text(tag + "\n")
    os.replace(pointer, root / LATEST_FILE)
    complete = sorted((p for p in root.iterdir() if p.is_dir() and (p / STATE_FILE).is_file()),
                      key=lambda p: (LearnerState.read(p).step, p.stat().st_mtime))
    for old in complete[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_rng(folder: Path, rank: int) -> None:
    torch.save(rng_state(), folder / f"rng-rank{rank}.pt")


def load_rng(folder: Path, rank: int) -> None:
    path = folder / f"rng-rank{rank}.pt"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no RNG state for rank {rank} (was it written with fewer ranks?)")
    state = torch.load(path, weights_only=False)  # our own file: Python and numpy states are not tensors
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
