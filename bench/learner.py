"""Learner throughput: C3PO optimizer steps of exactly Φ loss tokens through DeepSpeed, in tokens per second.

Train batches are assembled by the real broker from synthetic rollouts (random token ids, lognormal response
lengths) and handed to the learner core as Arrow IPC bytes, as the Broker service would deliver them; the first
step is a warm-up and not timed. Reported: loss tokens/s (Φ per step time), all tokens/s (prompt + response through
forward and backward), step-time percentiles, micro-batches per step.

Two setups:

- ``--model tiny`` (default): the embedded tiny MoE policy at Φ = 8,192 on the CPU (fp32, ZeRO-0, gloo);
- ``--model qwen-0.5b``: a random-init ~0.5B-parameter dense Qwen2-shaped model at Φ = 65,536 on one CUDA GPU, bf16,
  ZeRO-2 (``--zero-stage``), with MFU = 6 · parameters · all tokens/s / peak FLOP/s (``--peak-tflops``, default
  989: H100/H200 dense bf16). Attention FLOPs are left out of the 6N rule, so MFU is slightly understated.

    ring-async bench learner --json            # or: python bench/learner.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _policy(kind: str, scratch: Path, config) -> Path:
    from ring_async.policy.embedded import initial_policy_path

    if kind == "tiny":
        return initial_policy_path(config)
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ring_async.policy.model import save_policy
    from ring_async.policy.tokenizer import build_tokenizer

    if not torch.cuda.is_available():
        raise SystemExit("bench learner: --model qwen-0.5b needs a CUDA GPU")
    # The shape of Qwen2.5-0.5B (0.49B parameters with tied embeddings), random weights: nothing is downloaded.
    model_config = Qwen2Config(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                               num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                               tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(model_config).to(torch.bfloat16)
    return save_policy(model, build_tokenizer(1024), scratch / "qwen-0.5b")


def _batches(config, vocab: int, steps: int, seed: int, prompt_tokens: int, median: float, high: int):
    import numpy as np

    from ring_async.broker.core import Broker
    from ring_async.broker.prompts import Prompt
    from ring_async.data.synthetic import LengthSpread, synthetic_rollouts

    rng = np.random.default_rng(seed)
    broker = Broker(config, [Prompt(f"p{i}", "", "math", answer="1") for i in range(100_000)])
    spread = LengthSpread(low=16, high=high, median=median, sigma=0.6)
    out = []
    while len(out) < steps:
        lease = broker.lease("bench", 4)
        broker.submit(synthetic_rollouts(lease.groups, rng, spread, policy_version=0, prompt_tokens=prompt_tokens,
                                         vocab_size=vocab))
        while len(out) < steps and (batch := broker.next_batch()) is not None:
            out.append(batch.to_ipc())
    return out


def run(args) -> dict:
    import torch

    from ring_async.config import load_config
    from ring_async.engines.training import LearnerCore
    from ring_async.policy.model import count_parameters

    gpu = args.model != "tiny"
    budget = args.budget or (65_536 if gpu else 8_192)
    learner = {"device": "cuda" if gpu else "cpu", "zero_stage": args.zero_stage if args.zero_stage is not None
               else (2 if gpu else 0), "max_tokens_per_micro_batch": args.micro_batch_tokens or (32_768 if gpu else 4096)}
    overrides = {"algorithm.budget_tokens": budget, "broker.max_pool_tokens": 4 * budget, "broker.group_size": 8}
    overrides.update({f"learner.{k}": v for k, v in learner.items()})
    with tempfile.TemporaryDirectory(prefix="ring-async-bench-learner-") as scratch:
        overrides["run.run_dir"] = scratch
        config = load_config(None, overrides)
        policy = _policy(args.model, Path(scratch), config)
        core = LearnerCore(config, policy)
        vocab = core.vocab_size
        prompt_tokens, median, high = (256, 2048.0, 8192) if gpu else (40, 120.0, 400)
        batches = _batches(config, vocab, args.steps + 1, args.seed, prompt_tokens, median, high)
        core.train_step(batches[0])  # warm-up: allocator, kernels, DeepSpeed's first-step work
        walls, all_tokens, micro = [], [], []
        for ipc in batches[1:]:
            if gpu:
                torch.cuda.synchronize()
            started = time.perf_counter()
            result = core.train_step(ipc)
            if gpu:
                torch.cuda.synchronize()
            wall = time.perf_counter() - started
            walls.append(wall)
            all_tokens.append(result.metrics["train_tokens_per_s"] * result.metrics["wall_s"])
            micro.append(result.metrics["micro_batches"])
            assert result.metrics["loss_tokens"] == budget
        params = count_parameters(core.module)
    total = sum(walls)
    out = {
        "benchmark": "learner",
        "model": args.model,
        "parameters": params["total"],
        "active_parameters": params["active"],
        "budget": budget,
        "steps": len(walls),
        "loss_tokens_per_s": budget * len(walls) / total,
        "all_tokens_per_s": sum(all_tokens) / total,
        "step_s_p50": statistics.median(walls),
        "step_s_max": max(walls),
        "micro_batches_per_step": statistics.mean(micro),
        "zero_stage": config.learner.zero_stage,
        "dtype": "bf16" if gpu and config.learner.bf16 else "fp32",
        "kl_reference": config.algorithm.kl_coef > 0,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if gpu else None},
    }
    if gpu:
        out["mfu"] = 6 * params["active"] * out["all_tokens_per_s"] / (args.peak_tflops * 1e12)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ring-async bench learner", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "qwen-0.5b"], default="tiny")
    parser.add_argument("--budget", type=int, help="Φ (default 8,192 tiny, 65,536 qwen-0.5b)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--zero-stage", type=int, choices=[0, 1, 2], help="default 0 on CPU, 2 on GPU")
    parser.add_argument("--micro-batch-tokens", type=int, help="learner.max_tokens_per_micro_batch")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak bf16 TFLOP/s for MFU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
