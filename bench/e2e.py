"""End to end: training tokens per second of the whole system, async against sync, on one config and time budget.

Both modes run the real system (every role a Ray actor on an embedded local Ray instance, gRPC between them) from
the embedded default's selected SFT checkpoint on its math training tasks, one after the other in this process, with
the same configuration except ``run.mode`` (and ``algorithm.max_staleness``, which sync mode requires to be 0). Each
mode trains for ``--seconds`` after every role is up. Throughput is measured between the first and the last step that
finished inside the budget, from the learner's step log (``finished_at``), so actor start-up and the first step's
warm-up count in neither mode: trained tokens/s = (steps - 1) · Φ / (last finish - first finish).

In sync mode the broker makes generation and training take turns (it emits a step once nothing is being
generated and leases nothing until the learner reports the version that step produced); async overlaps them, with
rollouts at most ``max_staleness`` versions behind. On this machine a generator and the learner each hold one core.

Target (docs/benchmarks.md): async / sync >= 1.5.

    ring-async bench e2e --json                # or: python bench/e2e.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path


def _throughput(history: list[dict], budget: int) -> dict:
    times = [float(s["finished_at"]) for s in history]
    if len(times) < 2:
        raise SystemExit(f"bench e2e: only {len(times)} step(s) finished in the time budget; raise --seconds")
    per_step = (times[-1] - times[0]) / (len(times) - 1)
    train = sum(float(s["wall_s"]) for s in history[1:]) / (len(history) - 1)
    return {"steps": len(history), "trained_tokens_per_s": round(budget / per_step, 1),
            "seconds_per_step": round(per_step, 2), "train_seconds_per_step": round(train, 2),
            "step_tokens": sorted({int(s["loss_tokens"]) for s in history}),
            "staleness_max": max(int(s["staleness_max"]) for s in history)}


def run_mode(config, mode: str, policy: Path, prompts, seconds: float, run_root: Path) -> dict:
    from ring_async.system.hosts import read_steps
    from ring_async.system.launcher import run_on_ray

    run_dir = run_root / mode
    algorithm = config.algorithm
    if mode == "sync":
        algorithm = algorithm.model_copy(update={"max_staleness": 0})
    cfg = config.model_copy(update={"run": config.run.model_copy(update={"mode": mode, "run_dir": str(run_dir)}),
                                    "algorithm": algorithm})
    result = run_on_ray(cfg, str(policy), prompts, max_steps=None, time_budget_s=seconds, progress=False,
                        actor_logs=False)
    history = read_steps(run_dir)
    broker = result.broker
    generated = broker["tokens"].get("accepted", 0)
    return {"mode": mode, "max_staleness": cfg.algorithm.max_staleness,
            **_throughput(history, cfg.algorithm.budget_tokens),
            "response_tokens_accepted": int(generated),
            "zero_advantage_tokens": int(broker["tokens"].get("zero_advantage", 0)),
            "stale_tokens": int(broker["tokens"].get("stale", 0)),
            "stale_samples_stopped": sum(int(s.get("stale_aborted", 0)) for s in result.generators.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output anyway)")
    parser.add_argument("--seconds", type=float, default=240.0, help="training time per mode, after start-up")
    from ring_async.commands.options import add_config_options, config_from_args
    from ring_async.sft.pipeline import prepare_policy
    from ring_async.system.inprocess import prompts_from_records

    add_config_options(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    prepared = prepare_policy(config, progress=False)
    prompts = prompts_from_records([r for r in prepared.splits.train if r.reward_type == "math"])
    with tempfile.TemporaryDirectory(prefix="ring-async-bench-e2e-") as scratch:
        modes = {mode: run_mode(config, mode, prepared.path, prompts, args.seconds, Path(scratch))
                 for mode in ("async", "sync")}
    ratio = modes["async"]["trained_tokens_per_s"] / modes["sync"]["trained_tokens_per_s"]
    # Sync time per step is generation + training (+ weight sync); overlapping them perfectly takes the longer one.
    sync = modes["sync"]
    generate = sync["seconds_per_step"] - sync["train_seconds_per_step"]
    ceiling = sync["seconds_per_step"] / max(generate, sync["train_seconds_per_step"])
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "budget_tokens": config.algorithm.budget_tokens, "seconds_per_mode": args.seconds,
        "async": modes["async"], "sync": modes["sync"],
        "async_over_sync": round(ratio, 3),
        # What overlap alone can give on this config: (generate + train) / max(generate, train), from sync's split.
        "overlap_ceiling": round(ceiling, 3),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
