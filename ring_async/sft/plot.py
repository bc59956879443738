"""The selection plot: entropy (with the target band) and held-out accuracy per SFT checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ring_async.sft.selection import SelectionReport


def plot_selection(report: "SelectionReport", path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    steps = [m.step for m in report.checkpoints]
    entropy = [m.entropy for m in report.checkpoints]
    accuracy = [m.accuracy if m.accuracy is not None else float("nan") for m in report.checkpoints]
    low, high = report.band
    fig, left = plt.subplots(figsize=(7, 4), dpi=110)
    left.axhspan(low, high, color="tab:blue", alpha=0.12, label=f"entropy band [{low:g}, {high:g}]")
    left.plot(steps, entropy, "o-", color="tab:blue", label="mean token entropy (nats)")
    left.set_xlabel("SFT step")
    left.set_ylabel("mean token entropy (nats)", color="tab:blue")
    right = left.twinx()
    right.plot(steps, accuracy, "s--", color="tab:orange", label="held-out accuracy")
    right.set_ylabel("held-out accuracy (T = 1.0)", color="tab:orange")
    right.set_ylim(0, 1)
    left.axvline(report.chosen.step, color="tab:green", linestyle=":", label=f"chosen: step {report.chosen.step}")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="upper right", fontsize=8)
    left.set_title("SFT checkpoint selection by entropy" + ("" if report.in_band else " (none in band: nearest)"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
