"""Building the engine a generator runs from the ``generation`` config and a policy folder."""

from __future__ import annotations

from pathlib import Path

import torch

from ring_async.config import RingConfig
from ring_async.engines.generation.errors import EngineUnavailableError
from ring_async.engines.generation.interface import GenerationEngine
from ring_async.engines.generation.torch_engine import TorchEngine, TorchEngineCore
from ring_async.engines.generation.vllm_engine import VllmEngine, vllm_unavailable_reason

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def choose_engine(config: RingConfig) -> str:
    """The engine ``generation.engine`` resolves to here ("auto": vLLM when it can run, else torch)."""
    wanted = config.generation.engine
    if wanted == "auto":
        return "vllm" if vllm_unavailable_reason() is None else "torch"
    if wanted == "vllm":
        reason = vllm_unavailable_reason()
        if reason is not None:
            raise EngineUnavailableError(f"generation.engine is 'vllm' but {reason}")
    return wanted


def build_engine(config: RingConfig, policy_path: str | Path, *, policy_version: int = 0) -> GenerationEngine:
    """The configured engine over the policy in ``policy_path`` (not started: ``await engine.start()``)."""
    gen = config.generation
    seed = gen.seed if gen.seed is not None else config.run.seed
    if choose_engine(config) == "vllm":
        return VllmEngine(
            policy_path, dtype="bfloat16" if gen.dtype == "auto" else gen.dtype, max_batch_size=gen.max_batch_size,
            max_model_len=gen.max_model_len, logprobs_mode=gen.logprobs_mode, seed=seed,
            gpu_memory_utilization=gen.vllm_gpu_memory_utilization, tensor_parallel_size=gen.vllm_tensor_parallel_size,
            enforce_eager=gen.vllm_enforce_eager, check_finite_weights=gen.check_finite_weights,
            policy_version=policy_version,
        )
    from ring_async.policy.model import load_policy

    if gen.torch_threads:
        torch.set_num_threads(gen.torch_threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if gen.device == "auto" else gen.device
    dtype = None if gen.dtype == "auto" else _TORCH_DTYPES[gen.dtype]
    policy = load_policy(policy_path, device=device, dtype=dtype)
    core = TorchEngineCore(
        policy.model, policy.tokenizer, max_batch_size=gen.max_batch_size, max_model_len=gen.max_model_len,
        scheduling=gen.scheduling, logprobs_mode=gen.logprobs_mode, seed=seed, policy_version=policy_version,
        check_finite_weights=gen.check_finite_weights,
    )
    return TorchEngine(core)
