"""Distillation SFT of the embedded tiny policy: held-out accuracy and entropy against wall time.

Builds (or takes from the cache) the default policy and synthetic tasks, runs SFT from scratch into a temporary
folder (timed; never cached), selects the checkpoint by entropy, and samples every held-out math task with the
chosen checkpoint at temperature 1.0 (accuracy = exact match of the boxed answer). Prints one JSON object.

Target (docs/benchmarks.md): on 2 CPU cores, SFT within 600 s and held-out accuracy of the chosen checkpoint
>= 0.40 and < 0.95 (room left for RL).

    ring-async bench sft --json            # or: python bench/sft.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import yaml


def run(config_path: str | None, overrides: dict, keep: str | None) -> dict:
    import torch

    from ring_async.config import load_config
    from ring_async.policy.embedded import initial_policy_path
    from ring_async.policy.model import count_parameters, load_policy
    from ring_async.sft.probe import probe
    from ring_async.sft.selection import select_checkpoint
    from ring_async.sft.trainer import CHECKPOINTS_DIR, run_sft
    from ring_async.tasks.dataset import load_splits

    config = load_config(config_path, overrides)
    policy_path = initial_policy_path(config)
    splits = load_splits(config)
    with tempfile.TemporaryDirectory(prefix="ring-async-bench-sft-") as scratch:
        out = Path(keep) if keep else Path(scratch)
        result = run_sft(policy_path, splits.train, out / "sft", config.sft, seed=config.run.seed,
                         max_length=config.model.max_length, progress=False)
        started = time.monotonic()
        report = select_checkpoint(out / "sft" / CHECKPOINTS_DIR, splits.heldout, config.checkpoint_selection,
                                   out / "selection", seed=config.run.seed, progress=False)
        selection_s = time.monotonic() - started
        heldout_math = [r for r in splits.heldout if r.reward_type == "math"]
        chosen = load_policy(report.chosen.path, experts_implementation="eager")
        evaluation = probe(chosen, heldout_math, max_new_tokens=config.checkpoint_selection.max_new_tokens,
                           temperature=1.0, seed=config.run.seed + 1)
        counts = count_parameters(chosen.model)
    accuracy = evaluation.accuracy or 0.0
    return {
        "benchmark": "sft",
        "accuracy": accuracy,
        "entropy": evaluation.mean_entropy,
        "wall_seconds": result.wall_s,
        "tokens_per_s": result.tokens_per_s,
        "meets_target": result.wall_s <= 600 and 0.40 <= accuracy < 0.95,
        "heldout_math": len(heldout_math),
        "mean_response_tokens": evaluation.mean_response_tokens,
        "chosen": {"step": report.chosen.step, "epoch": report.chosen.epoch, "in_band": report.in_band,
                   "reason": report.reason, "probe_entropy": report.chosen.entropy,
                   "probe_accuracy": report.chosen.accuracy},
        "band": list(report.band),
        "checkpoints": [{"step": m.step, "epoch": m.epoch, "sft_loss": round(m.sft_loss, 4),
                         "entropy": round(m.entropy, 4), "accuracy": m.accuracy} for m in report.checkpoints],
        "sft": {"steps": result.steps, "response_tokens": result.response_tokens, "train_tasks": len(splits.train),
                "epochs": config.sft.epochs, "batch_size": config.sft.batch_size, "lr": config.sft.lr},
        "selection_seconds": selection_s,
        "model": {"parameters": counts["total"], "active_parameters": counts["active"],
                  "architecture": chosen.model.config.model_type},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ring-async bench sft", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: the embedded default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--keep", help="keep the SFT run and the selection report in this folder")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    result = run(args.config, overrides, args.keep)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
