"""Broker throughput: synthetic rollouts through Arrow encode/decode and the broker core, in one process.

Feeds groups of K responses with lognormal lengths (clipped to [1k, 32k] tokens by default) the way generators do:
each group is encoded as an Arrow IPC message, decoded (checked) and submitted. Ingest time is encode + decode +
submit; assembly time is ``next_batch`` plus encoding the train batch for the wire. Prints one JSON object.

    ring-async bench broker --json            # or: python bench/broker.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def run(budget: int, group_size: int, steps: int, seed: int, low: int, high: int, median: float) -> dict:
    from ring_async.broker.core import Broker
    from ring_async.broker.prompts import Prompt
    from ring_async.config import load_config
    from ring_async.data import codec
    from ring_async.data.schemas import ROLLOUT
    from ring_async.data.synthetic import LengthSpread, synthetic_rollouts

    config = load_config(
        overrides={
            "run.seed": seed,
            "algorithm.budget_tokens": budget,
            "algorithm.max_staleness": 4,
            "broker.group_size": group_size,
            "broker.max_pool_tokens": budget * 8,
            "broker.max_inflight_groups": 4096,
            "broker.expected_response_tokens": int(median),
        }
    )
    broker = Broker(config, [Prompt(f"p{i}", f"prompt {i}", "math") for i in range(100_000)])
    rng = np.random.default_rng(seed)
    spread = LengthSpread(low=low, high=high, median=median)

    # Generate the workload first: producing random tokens is the generators' cost, not the broker's.
    ingest_s = 0.0
    ingest_tokens = 0
    ingest_messages = 0
    assembly_ms: list[float] = []
    step_tokens: list[int] = []
    while len(step_tokens) < steps:
        lease = broker.lease("bench", 4)
        messages = [
            synthetic_rollouts(lease.groups.slice(i, 1), rng, spread, policy_version=broker.policy_version)
            for i in range(lease.groups.num_rows)
        ]
        for batch in messages:
            start = time.perf_counter()
            broker.submit(codec.decode(codec.encode(batch, ROLLOUT), ROLLOUT))
            ingest_s += time.perf_counter() - start
            ingest_tokens += len(batch.column("response_token_ids").values)
            ingest_messages += 1
        while True:
            start = time.perf_counter()
            train = broker.next_batch()
            if train is None:
                break
            wire = train.to_ipc()
            assembly_ms.append((time.perf_counter() - start) * 1e3)
            step_tokens.append(train.loss_tokens)
            del wire
            broker.set_policy_version(broker.policy_version + 1)
        if not messages and not lease.backpressure:
            raise RuntimeError("the prompt set ran dry before the benchmark finished")
    closure = broker.closure()
    return {
        "benchmark": "broker",
        "budget": budget,
        "group_size": group_size,
        "length_spread": {"low": low, "high": high, "median": median},
        "steps": len(step_tokens),
        "step_tokens_min": min(step_tokens),
        "step_tokens_max": max(step_tokens),
        "ingest_tokens": ingest_tokens,
        "ingest_messages": ingest_messages,
        "ingest_tokens_per_s": ingest_tokens / ingest_s,
        "ingest_ms_per_group": ingest_s / ingest_messages * 1e3,
        "assembly_ms_p50": float(np.percentile(assembly_ms, 50)),
        "assembly_ms_p99": float(np.percentile(assembly_ms, 99)),
        "assembly_ms_max": float(np.max(assembly_ms)),
        "accounting_closure": closure,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ring-async bench broker", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=409_600, help="Φ, tokens per step (default 409600)")
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--low", type=int, default=1024)
    parser.add_argument("--high", type=int, default=32768)
    parser.add_argument("--median", type=float, default=4096.0)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    result = run(args.budget, args.group_size, args.steps, args.seed, args.low, args.high, args.median)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
