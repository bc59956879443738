"""``ring-async run``: a training run with every role as a Ray actor; ``ring-async eval``: held-out accuracy.

``run`` starts from ``--start-from`` (a policy folder), else ``model.path`` (a user's checkpoint), else the
entropy-selected SFT checkpoint of the embedded default (built and cached on first use). It trains on the train
split's tasks of the chosen reward types for ``--steps`` optimizer steps (default ``learner.total_steps``) on an
embedded local Ray instance, or on a running cluster with ``--address``. The final checkpoint lands in
``<run_dir>/checkpoints`` (its ``policy/`` folder is the trained policy), per-step metrics in
``<run_dir>/learner-steps.jsonl``, and ``<run_dir>/summary.json`` sums it up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ring_async.commands.options import add_config_options, config_from_args
from ring_async.config import RingConfig
from ring_async.errors import ConfigError, RingAsyncError

REWARD_TYPES = ("math", "code")


def _reward_types(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in REWARD_TYPES]
    if unknown or not kinds:
        raise ConfigError(f"--reward-types {text!r}: use a comma list of {', '.join(REWARD_TYPES)}")
    return kinds


def start_policy(config: RingConfig, start_from: str | None) -> Path:
    """The policy RL starts from: an explicit folder, the user's checkpoint, or the selected SFT checkpoint."""
    if start_from:
        path = Path(start_from)
        if not (path / "config.json").is_file():
            raise RingAsyncError(f"--start-from {path}: not a Hugging Face model folder (no config.json)")
        return path
    if config.model.path:
        return Path(config.model.path)
    from ring_async.sft.pipeline import selected_checkpoint

    return Path(selected_checkpoint(config, progress=True).chosen.path)


def step_summary(run_dir: Path) -> dict:
    """What the learner's per-step log says about the run: step count and tokens per step."""
    from ring_async.system.hosts import read_steps

    steps = read_steps(run_dir)
    tokens = [int(s["loss_tokens"]) for s in steps]
    return {"steps": len(steps), "step_tokens_min": min(tokens, default=0), "step_tokens_max": max(tokens, default=0),
            "reward_mean_first": steps[0]["reward_mean"] if steps else None,
            "reward_mean_last": steps[-1]["reward_mean"] if steps else None}


def _run(args: argparse.Namespace) -> int:
    from ring_async.system.inprocess import prompts_from_records
    from ring_async.system.launcher import run_on_ray
    from ring_async.tasks.dataset import load_splits

    config = config_from_args(args)
    steps = args.steps or config.learner.total_steps
    if not steps or steps < 1:
        raise ConfigError("how long to train: pass --steps N (N >= 1) or set learner.total_steps")
    if args.generators < 1:
        raise ConfigError(f"--generators {args.generators}: at least 1")
    kinds = _reward_types(args.reward_types)
    policy = start_policy(config, args.start_from)
    records = [r for r in load_splits(config).train if r.reward_type in kinds]
    if not records:
        raise RingAsyncError(f"the train split has no {'/'.join(kinds)} tasks")
    result = run_on_ray(config, str(policy), prompts_from_records(records), max_steps=steps, address=args.address,
                        generators=args.generators, metrics_port=args.metrics_port)
    run_dir = Path(config.run.run_dir)
    summary = {
        "start_policy": str(policy),
        "final_checkpoint": str(run_dir / "checkpoints"),
        "budget": config.algorithm.budget_tokens,
        "wall_seconds": round(result.wall_s, 1),
        **step_summary(run_dir),
        "accounting": {"rollouts": result.broker.get("rollouts"), "tokens": result.broker.get("tokens")},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


CONTROL_TOKEN_ENV = "RING_ASYNC_CONTROL_TOKEN"


def _serve(args: argparse.Namespace) -> int:
    import os
    import secrets
    import signal

    from ring_async.metrics import targets_url
    from ring_async.system.inprocess import prompts_from_records
    from ring_async.system.launcher import run_on_ray
    from ring_async.tasks.dataset import load_splits

    config = config_from_args(args)
    kinds = _reward_types(args.reward_types)
    policy = start_policy(config, args.start_from)
    records = [r for r in load_splits(config).train if r.reward_type in kinds]
    token = os.environ.get(CONTROL_TOKEN_ENV) or secrets.token_urlsafe(32)

    def interrupt(signum, frame):  # SIGTERM (a scheduler stopping the service) ends it like Ctrl-C
        raise KeyboardInterrupt

    def on_started(result) -> None:
        # Installed here, after ray.init, which sets a SIGTERM handler of its own.
        signal.signal(signal.SIGTERM, interrupt)
        shown = "from $" + CONTROL_TOKEN_ENV if os.environ.get(CONTROL_TOKEN_ENV) else token
        print(json.dumps({"control": result.control_address, "token": shown, "run_dir": config.run.run_dir,
                          # the broker's /targets lists every role's /metrics for Prometheus
                          "metrics_targets": targets_url(result.endpoints[0])}), flush=True)
    result = run_on_ray(config, str(policy), prompts_from_records(records), max_steps=None, address=args.address,
                        generators=args.generators, control_token=token, control_port=args.control_port,
                        metrics_port=args.metrics_port, on_started=on_started, progress=not args.quiet)
    print(json.dumps({"stopped_after_steps": result.learner.get("step"),
                      "last_checkpoint_step": result.learner.get("last_checkpoint_step"),
                      "wall_seconds": round(result.wall_s, 1)}))
    return 0


def _status(args: argparse.Namespace) -> int:
    import asyncio
    import os

    import grpc
    from google.protobuf.json_format import MessageToDict

    from ring_async.control.client import ControlClient

    token = args.token or os.environ.get(CONTROL_TOKEN_ENV)
    if not token:
        raise ConfigError(f"the Control token: pass --token or set ${CONTROL_TOKEN_ENV}")

    async def ask():
        async with ControlClient(args.address, token) as client:
            return await client.status(timeout=args.timeout)

    try:
        status = asyncio.run(ask())
    except grpc.aio.AioRpcError as err:
        raise RingAsyncError(f"{args.address}: {err.code().name}: {err.details()}") from None
    print(json.dumps(MessageToDict(status, preserving_proto_field_name=True)))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ring_async.policy.model import load_policy
    from ring_async.sft.probe import probe
    from ring_async.tasks.dataset import load_splits

    config = config_from_args(args)
    kinds = _reward_types(args.reward_types)
    path = Path(args.policy)
    if (path / "latest").is_file():  # a learner checkpoint directory: its latest checkpoint's policy
        path = path / (path / "latest").read_text().strip() / "policy"
    elif (path / "policy" / "config.json").is_file():
        path = path / "policy"
    records = [r for r in load_splits(config).heldout if r.reward_type in kinds][: args.limit]
    result = probe(load_policy(path, experts_implementation="eager"), records, samples_per_prompt=args.samples,
                   max_new_tokens=config.generation.max_tokens, temperature=args.temperature, seed=config.run.seed)
    print(json.dumps({"policy": str(path), "reward_types": kinds, "prompts": result.prompts,
                      "samples_per_prompt": args.samples, f"avg@{args.samples}": result.accuracy,
                      "entropy": result.mean_entropy, "mean_response_tokens": result.mean_response_tokens}))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser)
    parser.add_argument("--reward-types", default="math", help="comma list of task types (default: math)")


METRICS_PORT_HELP = ("port of the broker's /metrics and /targets (Prometheus discovery of every role; 0: any; "
                     "docs/operations.md)")


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="a training run: roles as Ray actors (local, or --address)")
    _common(run)
    run.add_argument("--steps", type=int, help="optimizer steps (default: learner.total_steps)")
    run.add_argument("--start-from", help="policy folder to start RL from (default: the selected SFT checkpoint)")
    run.add_argument("--address", help="address of a running Ray cluster (default: an embedded local one)")
    run.add_argument("--generators", type=int, default=1, help="generator actors (default 1)")
    run.add_argument("--run-dir", help="override run.run_dir")
    run.add_argument("--metrics-port", type=int, default=0, help=METRICS_PORT_HELP)
    run.set_defaults(func=_run)
    serve = subparsers.add_parser("serve", help="a long-running service: trains until stopped (Ctrl-C, SIGTERM)")
    _common(serve)
    serve.add_argument("--start-from", help="policy folder to start RL from (default: the selected SFT checkpoint)")
    serve.add_argument("--address", help="address of a running Ray cluster (default: an embedded local one)")
    serve.add_argument("--generators", type=int, default=1, help="generator actors (default 1)")
    serve.add_argument("--control-port", type=int, default=0, help="port of the public Control service (0: any)")
    serve.add_argument("--run-dir", help="override run.run_dir")
    serve.add_argument("--metrics-port", type=int, default=0, help=METRICS_PORT_HELP)
    serve.add_argument("--quiet", action="store_true", help="no progress bar")
    serve.set_defaults(func=_serve)
    status = subparsers.add_parser("status", help="the state of a running system, from its Control service")
    status.add_argument("--address", required=True, help="host:port of the Control service")
    status.add_argument("--token", help=f"the Control token (default: ${CONTROL_TOKEN_ENV})")
    status.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    status.set_defaults(func=_status)
    ev = subparsers.add_parser("eval", help="held-out accuracy (avg@k at the sampling temperature) of a policy")
    _common(ev)
    ev.add_argument("policy", help="a policy folder, a learner checkpoint, or a checkpoint directory")
    ev.add_argument("--samples", type=int, default=1, help="samples per prompt (avg@k)")
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument("--limit", type=int, default=None, help="at most this many held-out prompts")
    ev.set_defaults(func=_eval)
