"""``ring-async demo``: the embedded default, end to end, with what exists so far.

Today that is the data plane and the C3PO broker on synthetic rollouts: prompt groups are leased, answered with
seeded synthetic responses, encoded and decoded as Arrow, scored, pooled and emitted as fixed-token train batches
while the policy version advances. Generation, verification and learning plug into the same loop as they land.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ring_async.broker.core import Broker
from ring_async.broker.prompts import Prompt
from ring_async.config import load_config
from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.data.train_batch import TrainBatch


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    run_dir = Path(args.run_dir or config.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.run.seed)
    broker = Broker(config, [Prompt(f"demo-{i}", f"synthetic prompt {i}", "math") for i in range(4096)])
    spread = LengthSpread(low=16, high=1024, median=config.broker.expected_response_tokens, sigma=0.6)
    started = time.monotonic()
    step_tokens: list[int] = []
    print(
        f"ring-async demo: broker dry run, Φ={config.algorithm.budget_tokens} cut={config.algorithm.cut} "
        f"K={config.broker.group_size} max_staleness={config.algorithm.max_staleness} "
        "(synthetic responses; generation and learning plug in here as they land)"
    )
    while len(step_tokens) < args.steps:
        lease = broker.lease("demo-generator", 2)
        if lease.groups.num_rows:
            rollouts = synthetic_rollouts(lease.groups, rng, spread, policy_version=broker.policy_version)
            broker.submit(codec.decode(codec.encode(rollouts, ROLLOUT), ROLLOUT))
        batch = broker.next_batch()
        if batch is None:
            continue
        batch = TrainBatch.from_ipc(batch.to_ipc())
        step_tokens.append(batch.loss_tokens)
        advantages = batch.records.column("advantage").to_numpy()
        print(
            f"step {batch.step_id:3d}  loss tokens {batch.loss_tokens}  responses {batch.num_sequences:3d}  "
            f"|A| mean {np.abs(advantages).mean():.3f}  pool {broker.pool_tokens} tokens"
        )
        broker.set_policy_version(broker.policy_version + 1)
    summary = {
        "budget": config.algorithm.budget_tokens,
        "steps": len(step_tokens),
        "step_tokens_min": min(step_tokens),
        "step_tokens_max": max(step_tokens),
        "wall_seconds": round(time.monotonic() - started, 3),
        "accounting": broker.ledger.snapshot(),
        "accounting_closure": broker.closure(),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("budget", "steps", "step_tokens_min", "step_tokens_max", "accounting_closure")}))
    print(f"summary written to {run_dir / 'summary.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the embedded default end to end")
    parser.add_argument("--config", help="YAML config (default: the embedded default)")
    parser.add_argument("--steps", type=int, default=20, help="training steps to run (default 20)")
    parser.add_argument("--run-dir", help="override run.run_dir")
    parser.set_defaults(func=_run)
