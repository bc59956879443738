"""Choosing the SFT checkpoint that RL starts from, by token entropy (DESIGN §2, "distillation first").

Every checkpoint is sampled on the same probe prompts at the RL temperature; its mean token entropy decides, not
its accuracy: a checkpoint whose entropy has collapsed explores too little and stalls early in RL, one whose entropy
is still high converges slowly. The rule, with band [low, high]:

1. exactly one checkpoint in the band: take it;
2. several in the band: the highest held-out accuracy among them (accuracy only breaks the tie the band leaves);
   then the entropy closest to the band's centre; then the earliest step (fewer SFT tokens for the same result);
3. none in the band: ``nearest`` takes the checkpoint with the smallest distance to the band (ties: higher
   accuracy, then earlier) and the report says it was out of band; ``error`` refuses.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ring_async.config import CheckpointSelectionConfig
from ring_async.errors import RingAsyncError
from ring_async.policy.model import load_policy
from ring_async.sft.probe import ProbeResult, probe
from ring_async.sft.trainer import SftCheckpoint, list_checkpoints
from ring_async.tasks.record import TaskRecord

log = logging.getLogger(__name__)

REPORT_FILE = "selection.json"
PLOT_FILE = "selection.png"


class SelectionError(RingAsyncError):
    """No checkpoint can be selected (none found, no probe prompts, or none in the band with when_none_in_band: error)."""


@dataclass(frozen=True)
class CheckpointMeasurement:
    path: str
    step: int
    epoch: float
    sft_tokens: int
    sft_loss: float
    entropy: float
    accuracy: float | None
    token_efficiency: float | None
    mean_response_tokens: float
    truncated: float


@dataclass(frozen=True)
class Choice:
    index: int
    in_band: bool
    reason: str


@dataclass
class SelectionReport:
    band: tuple[float, float]
    rule: str
    chosen: CheckpointMeasurement
    in_band: bool
    reason: str
    checkpoints: list[CheckpointMeasurement]
    probe: dict = field(default_factory=dict)
    plot: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.chosen.path)

    def to_json(self) -> dict:
        out = asdict(self)
        out["band"] = list(self.band)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "SelectionReport":
        checkpoints = [CheckpointMeasurement(**c) for c in data["checkpoints"]]
        return cls(tuple(data["band"]), data["rule"], CheckpointMeasurement(**data["chosen"]), data["in_band"],
                   data["reason"], checkpoints, data.get("probe", {}), data.get("plot"))

    def write(self, out_dir: Path) -> Path:
        path = out_dir / REPORT_FILE
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path


def _accuracy_key(m: CheckpointMeasurement) -> float:
    return m.accuracy if m.accuracy is not None else -math.inf


def choose(
    measurements: Sequence[CheckpointMeasurement], band: tuple[float, float], when_none_in_band: str = "nearest"
) -> Choice:
    """Apply the entropy-band rule (module docstring) to measured checkpoints."""
    if not measurements:
        raise SelectionError("no checkpoints to choose from")
    low, high = band
    centre = (low + high) / 2
    inside = [i for i, m in enumerate(measurements) if low <= m.entropy <= high]
    if len(inside) == 1:
        return Choice(inside[0], True, "the only checkpoint with entropy in the band")
    if inside:
        best = min(inside, key=lambda i: (-_accuracy_key(measurements[i]), abs(measurements[i].entropy - centre),
                                          measurements[i].step))
        return Choice(best, True, f"{len(inside)} checkpoints in the band; highest held-out accuracy among them")
    if when_none_in_band == "error":
        entropies = ", ".join(f"step {m.step}: {m.entropy:.4f}" for m in measurements)
        raise SelectionError(f"no checkpoint has entropy in [{low}, {high}] ({entropies})")

    def distance(m: CheckpointMeasurement) -> float:
        return low - m.entropy if m.entropy < low else m.entropy - high

    best = min(range(len(measurements)), key=lambda i: (round(distance(measurements[i]), 12),
                                                      -_accuracy_key(measurements[i]), measurements[i].step))
    side = "below" if measurements[best].entropy < low else "above"
    return Choice(best, False, f"no checkpoint in the band; nearest one taken (entropy {side} the band)")


def measure_checkpoint(
    checkpoint: SftCheckpoint, probe_records: Sequence[TaskRecord], selection: CheckpointSelectionConfig, seed: int,
    device: str = "cpu",
) -> CheckpointMeasurement:
    policy = load_policy(checkpoint.path, device=device, experts_implementation="eager" if device == "cpu" else None)
    result: ProbeResult = probe(policy, probe_records, selection.samples_per_prompt, selection.max_new_tokens,
                                selection.temperature, seed)
    return CheckpointMeasurement(
        path=str(checkpoint.path), step=checkpoint.step, epoch=checkpoint.epoch, sft_tokens=checkpoint.sft_tokens,
        sft_loss=checkpoint.loss, entropy=result.mean_entropy, accuracy=result.accuracy,
        token_efficiency=result.token_efficiency, mean_response_tokens=result.mean_response_tokens,
        truncated=result.truncated,
    )


def probe_set(heldout: Sequence[TaskRecord], selection: CheckpointSelectionConfig) -> list[TaskRecord]:
    """The first ``probe_prompts`` held-out tasks of the probed reward types (held-out order is fixed)."""
    records = [r for r in heldout if r.reward_type in selection.probe_reward_types][: selection.probe_prompts]
    if not records:
        raise SelectionError(
            f"no held-out tasks of type {', '.join(selection.probe_reward_types)} to probe the checkpoints with"
        )
    return records


def select_checkpoint(
    checkpoints_dir: str | os.PathLike[str], heldout: Sequence[TaskRecord], selection: CheckpointSelectionConfig,
    out_dir: str | os.PathLike[str], seed: int = 0, progress: bool = True, device: str = "cpu",
) -> SelectionReport:
    """Measure every checkpoint under ``checkpoints_dir``, choose one, write ``selection.json`` and ``selection.png``
    into ``out_dir``."""
    from tqdm.auto import tqdm

    checkpoints = list_checkpoints(checkpoints_dir)
    if not checkpoints:
        raise SelectionError(f"{checkpoints_dir}: no SFT checkpoints (folders with sft_state.json)")
    records = probe_set(heldout, selection)
    measurements = []
    for checkpoint in tqdm(checkpoints, desc="probe", unit="ckpt", disable=not progress):
        measurements.append(measure_checkpoint(checkpoint, records, selection, seed, device))
        m = measurements[-1]
        log.info("step %d: entropy %.4f accuracy %s", m.step, m.entropy, m.accuracy)
    choice = choose(measurements, selection.entropy_band, selection.when_none_in_band)
    if not choice.in_band:
        log.warning("selection: %s", choice.reason)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = SelectionReport(
        band=tuple(selection.entropy_band), rule=f"entropy band, when none in band: {selection.when_none_in_band}",
        chosen=measurements[choice.index], in_band=choice.in_band, reason=choice.reason, checkpoints=measurements,
        probe={"prompts": len(records), "samples_per_prompt": selection.samples_per_prompt,
               "temperature": selection.temperature, "max_new_tokens": selection.max_new_tokens,
               "reward_types": list(selection.probe_reward_types), "seed": seed},
    )
    from ring_async.sft.plot import plot_selection

    report.plot = str(plot_selection(report, out / PLOT_FILE))
    report.write(out)
    return report


def read_report(out_dir: str | os.PathLike[str]) -> SelectionReport:
    path = Path(out_dir) / REPORT_FILE
    try:
        return SelectionReport.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise SelectionError(f"{path}: not a readable selection report ({err})") from None
