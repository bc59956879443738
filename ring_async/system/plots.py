"""The PNG of a run: reward, entropy, gradient norm, loss tokens per step and throughput, per optimizer step."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

PANELS = (
    ("reward_mean", "reward (batch mean)"),
    ("entropy", "token entropy (nats)"),
    ("grad_norm", "gradient norm"),
    ("loss_tokens", "loss tokens per step"),
    ("tokens_per_s", "trained tokens/s"),
)


def plot_steps(steps: Sequence[dict], out: str | Path, title: str = "ring-async run") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    xs = [s["step"] for s in steps]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for ax, (key, label) in zip(axes, PANELS):
        ax.plot(xs, [s.get(key, float("nan")) for s in steps], marker=".", linewidth=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
