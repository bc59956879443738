"""``ring-async demo``: the embedded default end to end.

Tiny MoE policy and synthetic tasks (built offline, cached) → distillation SFT and the entropy-chosen checkpoint
(cached) → held-out math accuracy of that checkpoint → C3PO RL on math, every role a Ray actor on an embedded local
Ray instance → (``--code-steps N``) a code stage from the math result, rewarded by the sandbox → held-out math
accuracy of the final policy →
``<run_dir>/summary.json`` and ``<run_dir>/steps.png``. Both evaluations sample every held-out math task once at
temperature 1.0 with the same seed, so the two accuracies are directly comparable.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from ring_async.commands.options import add_config_options, config_from_args
from ring_async.config import RingConfig
from ring_async.errors import ConfigError

DEFAULT_MATH_STEPS = 40
# No code stage by default: the tiny policy's programs almost never run (measured: 5,561 of 5,806 compile errors,
# 18 wrong answers, none accepted, in 3 minutes), so nearly every group has zero advantage and a step of Φ tokens
# takes far longer than the whole demo. --code-steps N runs it on stronger policies (and in the tests).
DEFAULT_CODE_STEPS = 0


def _evaluate(config: RingConfig, policy: Path, records) -> dict:
    from ring_async.policy.model import load_policy
    from ring_async.sft.probe import probe

    result = probe(load_policy(policy, experts_implementation="eager"), records,
                   max_new_tokens=config.generation.max_tokens, temperature=1.0, seed=config.run.seed + 1)
    return {"accuracy": result.accuracy, "entropy": result.mean_entropy,
            "mean_response_tokens": result.mean_response_tokens, "prompts": result.prompts}


def _stage(config: RingConfig, name: str, policy: Path, records, steps: int) -> tuple[Path, list[dict], dict]:
    """One RL stage in its own run directory; returns the trained policy, the per-step log and the broker status."""
    from ring_async.system.hosts import read_steps
    from ring_async.system.inprocess import prompts_from_records
    from ring_async.system.launcher import run_on_ray

    stage_dir = Path(config.run.run_dir) / f"rl-{name}"
    if stage_dir.exists():
        # A run directory resumes what it holds (journal, checkpoints); the demo is a fresh run from the SFT policy.
        shutil.rmtree(stage_dir)
    stage = config.model_copy(update={"run": config.run.model_copy(update={"run_dir": str(stage_dir)})})
    print(f"ring-async demo: {name} RL, {steps} steps of Φ={config.algorithm.budget_tokens} tokens "
          f"on {len(records)} tasks (K={config.broker.group_size}, mode {config.run.mode})", flush=True)
    result = run_on_ray(stage, str(policy), prompts_from_records(records), max_steps=steps)
    history = read_steps(stage_dir)
    checkpoints = stage_dir / "checkpoints"
    return checkpoints / (checkpoints / "latest").read_text().strip() / "policy", history, result.broker


def _run(args: argparse.Namespace) -> int:
    from ring_async.sft.pipeline import prepare_policy
    from ring_async.system.plots import plot_steps

    started = time.monotonic()
    if args.steps < 1 or args.code_steps < 0:
        raise ConfigError(f"--steps must be >= 1 and --code-steps >= 0 (got {args.steps}, {args.code_steps})")
    config = config_from_args(args)
    run_dir = Path(config.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_policy(config, progress=True)
    heldout = [r for r in prepared.splits.heldout if r.reward_type == "math"]
    sft = _evaluate(config, prepared.path, heldout)
    print(f"ring-async demo: SFT checkpoint {prepared.path.name}: held-out math accuracy {sft['accuracy']:.3f}",
          flush=True)

    policy, history, broker = _stage(config, "math", prepared.path,
                                     [r for r in prepared.splits.train if r.reward_type == "math"], args.steps)
    code_tasks = [r for r in prepared.splits.train if r.reward_type == "code"]
    code_steps = args.code_steps if code_tasks else 0
    if args.code_steps and not code_tasks:
        print("ring-async demo: no code training tasks (tasks.code_train is 0): the code stage is skipped", flush=True)
    if code_steps:
        policy, code_history, broker = _stage(config, "code", policy, code_tasks, code_steps)
        history += [dict(s, step=s["step"] + len(history)) for s in code_history]
    rl = _evaluate(config, policy, heldout)
    tokens = [int(s["loss_tokens"]) for s in history]
    summary = {
        "sft_checkpoint": str(prepared.path),
        "sft_accuracy": sft["accuracy"],
        "rl_accuracy": rl["accuracy"],
        "heldout_math": len(heldout),
        "steps": len(history),
        "math_steps": args.steps,
        "code_steps": code_steps,
        "step_tokens_min": min(tokens, default=0),
        "step_tokens_max": max(tokens, default=0),
        "budget": config.algorithm.budget_tokens,
        "wall_seconds": round(time.monotonic() - started, 1),
        "final_policy": str(policy),
        "entropy": {"sft": sft["entropy"], "rl": rl["entropy"]},
        "accounting": {"rollouts": broker.get("rollouts"), "tokens": broker.get("tokens")},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if history:
        plot_steps(history, run_dir / "steps.png", title="ring-async demo: C3PO RL on the embedded default")
    print(json.dumps({k: summary[k] for k in ("sft_accuracy", "rl_accuracy", "steps", "step_tokens_min",
                                              "step_tokens_max", "budget", "wall_seconds")}))
    print(f"summary written to {run_dir / 'summary.json'}, plot to {run_dir / 'steps.png'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the embedded default end to end: SFT, math RL on Ray (a code stage "
                                   "with --code-steps), summary")
    add_config_options(parser)
    parser.add_argument("--steps", type=int, default=DEFAULT_MATH_STEPS,
                        help=f"math-stage optimizer steps (default {DEFAULT_MATH_STEPS})")
    parser.add_argument("--code-steps", type=int, default=DEFAULT_CODE_STEPS,
                        help="code-stage optimizer steps after math (default 0: the tiny policy's programs almost never "
                             "run, so its code groups have zero advantage)")
    parser.add_argument("--run-dir", help="override run.run_dir")
    parser.set_defaults(func=_run)
