"""``ring-async build-policy | make-data | sft | select-checkpoint``: the distillation stage, step by step.

Each command reads the configuration (``--config FILE``, ``--set key=value`` overrides) and uses the artifact cache,
so running ``select-checkpoint`` alone builds what it needs first and a second run of anything is instant. ``--out``
writes the artifact to a folder of your choice instead (not cached).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ring_async.commands.options import add_config_options, config_from_args


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _build_policy(args: argparse.Namespace) -> int:
    from ring_async.policy.embedded import build_embedded_policy, initial_policy_path
    from ring_async.policy.model import count_parameters, load_policy

    config = config_from_args(args)
    if args.out:
        path = build_embedded_policy(config, Path(args.out))
    else:
        path = initial_policy_path(config)
    policy = load_policy(path)
    counts = count_parameters(policy.model)
    print(json.dumps({"path": str(path), "architecture": policy.model.config.model_type,
                      "parameters": counts["total"], "active_parameters": counts["active"],
                      "vocab_size": len(policy.tokenizer)}))
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from ring_async.tasks.dataset import load_splits
    from ring_async.tasks.io import write_tasks

    config = config_from_args(args)
    splits = load_splits(config)
    out = Path(args.out or Path(config.run.run_dir) / "tasks")
    suffix = ".parquet" if args.format == "parquet" else ".jsonl"
    train = write_tasks(splits.train, out / f"train{suffix}")
    heldout = write_tasks(splits.heldout, out / f"heldout{suffix}")
    counts = {kind: {t: sum(r.reward_type == t for r in records) for t in ("math", "code")}
              for kind, records in (("train", splits.train), ("heldout", splits.heldout))}
    print(json.dumps({"train": str(train), "heldout": str(heldout), "counts": counts}))
    return 0


def _sft(args: argparse.Namespace) -> int:
    from ring_async.policy.embedded import initial_policy_path
    from ring_async.sft.pipeline import sft_run
    from ring_async.sft.trainer import SUMMARY_FILE, run_sft
    from ring_async.tasks.dataset import load_splits

    config = config_from_args(args)
    if args.out:
        splits = load_splits(config)
        result = run_sft(initial_policy_path(config), splits.train, Path(args.out), config.sft, seed=config.run.seed,
                         max_length=config.model.max_length, progress=not args.quiet)
        out = result.out_dir
    else:
        out = sft_run(config, progress=not args.quiet)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    print(json.dumps({"run": str(out), "steps": summary["steps"], "wall_s": round(summary["wall_s"], 1),
                      "tokens_per_s": round(summary["tokens_per_s"]),
                      "checkpoints": [str(out / c["path"]) for c in summary["checkpoints"]]}))
    return 0


def _select(args: argparse.Namespace) -> int:
    from ring_async.sft.pipeline import selected_checkpoint
    from ring_async.sft.selection import PLOT_FILE, REPORT_FILE, select_checkpoint
    from ring_async.tasks.dataset import load_splits

    config = config_from_args(args)
    if args.checkpoints:
        out = Path(args.out or Path(config.run.run_dir) / "selection")
        report = select_checkpoint(args.checkpoints, load_splits(config).heldout, config.checkpoint_selection, out,
                                   seed=config.run.seed, progress=not args.quiet)
    else:
        report = selected_checkpoint(config, progress=not args.quiet)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            report.write(out)
            if report.plot:
                shutil.copyfile(report.plot, out / PLOT_FILE)
        else:
            out = Path(report.plot).parent if report.plot else None
    for m in report.checkpoints:
        mark = "*" if m.path == report.chosen.path else " "
        acc = f"{m.accuracy:.3f}" if m.accuracy is not None else "n/a"
        print(f"{mark} step {m.step:6d}  entropy {m.entropy:.4f}  accuracy {acc}  tokens/response "
              f"{m.mean_response_tokens:.1f}")
    print(json.dumps({"chosen": report.chosen.path, "step": report.chosen.step, "entropy": report.chosen.entropy,
                      "accuracy": report.chosen.accuracy, "in_band": report.in_band, "reason": report.reason,
                      "band": list(report.band), "report": str(out / REPORT_FILE) if out else None,
                      "plot": str(out / PLOT_FILE) if out else None}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    build = subparsers.add_parser("build-policy", help="build (or fetch from the cache) the embedded tiny policy")
    _common(build)
    build.add_argument("--out", help="write the policy folder here instead of the cache")
    build.set_defaults(func=_build_policy)

    data = subparsers.add_parser("make-data", help="write the train and held-out task files")
    _common(data)
    data.add_argument("--out", help="folder for train/heldout files (default: RUN_DIR/tasks)")
    data.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl", help="file format (default jsonl)")
    data.set_defaults(func=_make_data)

    sft = subparsers.add_parser("sft", help="distillation SFT on the teacher responses (DeepSpeed)")
    _common(sft)
    sft.add_argument("--out", help="write the run here instead of the cache (always retrains)")
    sft.set_defaults(func=_sft)

    select = subparsers.add_parser("select-checkpoint", help="choose the SFT checkpoint by token entropy")
    _common(select)
    select.add_argument("--checkpoints", help="folder of SFT checkpoints (default: this config's cached SFT run)")
    select.add_argument("--out", help="folder for selection.json and selection.png")
    select.set_defaults(func=_select)
