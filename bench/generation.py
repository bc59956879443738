"""Generation: torch-engine throughput against HF ``generate``, continuous against static batching, weight updates.

On the embedded tiny policy (built or taken from the artifact cache) with synthetic math prompts:

1. ``throughput``: 64 sequences x 256 new tokens at temperature 1.0 (no early stop), the torch engine against
   transformers' ``generate`` on the same model, prompts and settings. Target: ratio >= 1.0 (from one run each).
2. ``mixed``: a mixed-length workload (response lengths spread 16..256) through the same engine with continuous
   and with static batching. Target: continuous / static tokens/s > 1.
3. ``weight_update``: the full policy pushed over loopback gRPC (Generator.UpdateWeights, safetensors buckets) to a
   serving engine, client-side wall time per update. Target: < 1 s.

Prints one JSON object.

    ring-async bench generation --json            # or: python bench/generation.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import random
import statistics
import time


def _prompts(tokenizer, count: int, seed: int) -> list[list[int]]:
    from ring_async.policy.tokenizer import encode_prompt
    from ring_async.tasks.math_tasks import math_task

    rng = random.Random(seed)
    return [encode_prompt(tokenizer, math_task(rng, 2).prompt) for _ in range(count)]


def _engine_tokens_per_s(model, tokenizer, prompts, lengths, *, batch: int, scheduling: str, seed: int) -> dict:
    from ring_async.engines.generation import GroupRequest, SamplingParams, TorchEngineCore

    core = TorchEngineCore(model, tokenizer, max_batch_size=batch, scheduling=scheduling, seed=seed)
    for i, (prompt, length) in enumerate(zip(prompts, lengths)):
        core.add(GroupRequest(f"g{i}", f"p{i}", prompt, SamplingParams(max_tokens=length, ignore_eos=True)))
    steps = 0
    start = time.perf_counter()
    samples = []
    while core.has_work:
        samples.extend(core.step())
        steps += 1
    elapsed = time.perf_counter() - start
    tokens = sum(s.num_tokens for s in samples)
    assert tokens == sum(lengths), "every sequence must produce exactly its max_tokens (eos ignored)"
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed, "steps": steps}


def _hf_tokens_per_s(model, tokenizer, prompts, new_tokens: int, seed: int) -> dict:
    import torch
    from transformers import GenerationConfig

    longest = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, longest - len(prompt):] = torch.tensor(prompt)
        mask[i, longest - len(prompt):] = 1
    # The engine's settings: plain temperature-1 sampling, no top-k/top-p, no eos (every sequence runs to the end).
    settings = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens, eos_token_id=None,
        pad_token_id=pad, bos_token_id=None,
    )
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=settings)
    elapsed = time.perf_counter() - start
    tokens = (out.shape[1] - longest) * len(prompts)
    assert tokens == new_tokens * len(prompts), "HF generate stopped early"
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed}


async def _weight_updates(model, tokenizer, repeats: int, bucket_bytes: int) -> dict:
    import torch

    from ring_async.engines.generation import TorchEngine, TorchEngineCore
    from ring_async.engines.generation.service import GeneratorService, push_weights, serve_generator
    from ring_async.transport import open_channel
    from ring_async.v1 import generator_pb2_grpc

    engine = TorchEngine(TorchEngineCore(model, tokenizer, max_batch_size=8))
    # New values for every weight, as after an optimizer step (a copy keeps tied weights tied: they travel once).
    learner = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in learner.parameters():
            parameter.add_(1e-3)
    published = learner.state_dict()
    async with engine:
        server = await serve_generator(GeneratorService(engine))
        channel = open_channel(server.address)
        stub = generator_pb2_grpc.GeneratorStub(channel)
        walls, loads, replies = [], [], []
        try:
            for version in range(1, repeats + 1):
                start = time.perf_counter()
                reply = await push_weights(stub, published, version=version, bucket_bytes=bucket_bytes)
                walls.append(time.perf_counter() - start)
                loads.append(reply.load_s)
                replies.append(reply)
        finally:
            await channel.close()
            await server.stop(0)
    ok = all(torch.equal(model.state_dict()[k], v) for k, v in published.items())
    return {
        "updates": repeats,
        "bytes": replies[-1].bytes,
        "buckets": replies[-1].buckets,
        "tensors": replies[-1].tensors,
        "bucket_bytes": bucket_bytes,
        "wall_s_first": walls[0],
        "wall_s_median": statistics.median(walls),
        "wall_s_max": max(walls),
        "server_load_s_median": statistics.median(loads),
        "weights_equal_after_update": ok,
        "final_version": replies[-1].policy_version,
    }


def run(sequences: int, new_tokens: int, mixed_requests: int, mixed_batch: int, seed: int, threads: int,
        repeats: int, bucket_bytes: int | None = None) -> dict:
    import numpy as np
    import torch

    from ring_async.config import load_config
    from ring_async.policy.embedded import initial_policy_path
    from ring_async.policy.model import count_parameters, load_policy

    if threads:
        torch.set_num_threads(threads)
    config = load_config(overrides={"run.seed": seed})
    policy = load_policy(initial_policy_path(config))
    model, tokenizer = policy.model, policy.tokenizer
    prompts = _prompts(tokenizer, max(sequences, mixed_requests), seed)

    # Warm both paths once (allocator, kernels' first-call costs) so neither pays them inside its timing.
    _engine_tokens_per_s(model, tokenizer, prompts[:8], [8] * 8, batch=8, scheduling="continuous", seed=seed)
    _hf_tokens_per_s(model, tokenizer, prompts[:8], 8, seed)

    engine = _engine_tokens_per_s(
        model, tokenizer, prompts[:sequences], [new_tokens] * sequences, batch=sequences, scheduling="continuous",
        seed=seed,
    )
    hf = _hf_tokens_per_s(model, tokenizer, prompts[:sequences], new_tokens, seed)

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(64), 0.8, size=mixed_requests), 16, 256).astype(int).tolist()
    mixed_prompts = prompts[:mixed_requests]
    continuous = _engine_tokens_per_s(model, tokenizer, mixed_prompts, lengths, batch=mixed_batch,
                                      scheduling="continuous", seed=seed)
    static = _engine_tokens_per_s(model, tokenizer, mixed_prompts, lengths, batch=mixed_batch, scheduling="static",
                                  seed=seed)

    update = asyncio.run(_weight_updates(model, tokenizer, repeats, bucket_bytes or config.generation.weight_bucket_bytes))
    params = count_parameters(model)
    return {
        "benchmark": "generation",
        "model": {
            "architecture": type(model).__name__,
            "parameters": params["total"],
            "active_parameters": params["active"],
            "vocab": int(model.config.vocab_size),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "experts_implementation": getattr(model.config, "_experts_implementation", None),
        },
        "throughput": {
            "sequences": sequences,
            "new_tokens": new_tokens,
            "prompt_tokens_mean": float(np.mean([len(p) for p in prompts[:sequences]])),
            "engine_tokens_per_s": engine["tokens_per_s"],
            "hf_generate_tokens_per_s": hf["tokens_per_s"],
            "engine_over_hf": engine["tokens_per_s"] / hf["tokens_per_s"],
            "engine_s": engine["seconds"],
            "hf_s": hf["seconds"],
        },
        "mixed": {
            "requests": mixed_requests,
            "batch": mixed_batch,
            "length_min": min(lengths),
            "length_median": float(np.median(lengths)),
            "length_max": max(lengths),
            "continuous_tokens_per_s": continuous["tokens_per_s"],
            "static_tokens_per_s": static["tokens_per_s"],
            "continuous_over_static": continuous["tokens_per_s"] / static["tokens_per_s"],
            "continuous_steps": continuous["steps"],
            "static_steps": static["steps"],
        },
        "weight_update": update,
        "targets": {
            "engine_over_hf": ">= 1.0",
            "continuous_over_static": "> 1.0",
            "weight_update_wall_s": "< 1.0",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ring-async bench generation", description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=64, help="sequences in the throughput comparison")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per sequence")
    parser.add_argument("--mixed-requests", type=int, default=128, help="requests in the mixed-length workload")
    parser.add_argument("--mixed-batch", type=int, default=32, help="batch slots for the mixed-length workload")
    parser.add_argument("--repeats", type=int, default=3, help="weight updates to time")
    # One intra-op thread by default: the tiny model's matrices are too small to split, and on a shared machine
    # OpenMP threads spinning against other processes make timings erratic (and both sides of a ratio unequal).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default; default 1)")
    parser.add_argument("--bucket-bytes", type=int, default=None,
                        help="weight bucket size (default: generation.weight_bucket_bytes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    result = run(args.sequences, args.new_tokens, args.mixed_requests, args.mixed_batch, args.seed, args.threads,
                 args.repeats, args.bucket_bytes)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
