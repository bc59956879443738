"""Generation: engines that sample K responses per prompt with behaviour logprobs and policy versions.

- :class:`TorchEngine` / :class:`TorchEngineCore`: continuous batching over any Hugging Face causal LM (CPU default).
- :class:`VllmEngine` (``ring_async.engines.generation.vllm_engine``): the same interface over vLLM's async engine,
  imported only when asked for (vLLM is an optional GPU extra).
- :mod:`.weights`: versioned, bucketed, checked weight updates.
- :func:`samples_to_rollouts`: finished samples as an Arrow ``rollout`` batch for the verifiers.
- :class:`GenerationLoop`: leases prompt groups from the broker, generates, forwards, backs off under back-pressure.
- ``.service``: the Generator gRPC service (UpdateWeights, GetStatus, Pause/Resume) and :func:`push_weights`;
  ``.clients``: the loop's Broker and Verifier peers over gRPC; ``.factory``: the engine the config asks for.

docs/generation.md describes the semantics and the guarantees.
"""

from ring_async.engines.generation.errors import (
    EngineUnavailableError,
    GenerationError,
    RequestError,
    StaleWeightVersionError,
    WeightUpdateError,
    WeightUpdateTimeout,
)
from ring_async.engines.generation.interface import GenerationEngine
from ring_async.engines.generation.loop import GenerationLoop, sampling_from_config
from ring_async.engines.generation.rollouts import requests_from_prompt_groups, samples_to_rollouts
from ring_async.engines.generation.torch_engine import TorchEngine, TorchEngineCore
from ring_async.engines.generation.types import CompletedSample, EngineStats, GroupRequest, SamplingParams
from ring_async.engines.generation.weights import (
    StagedWeights,
    WeightBucket,
    WeightManifest,
    WeightUpdateAssembler,
    WeightUpdateReport,
    iter_buckets,
)

__all__ = [
    "CompletedSample",
    "EngineStats",
    "EngineUnavailableError",
    "GenerationEngine",
    "GenerationError",
    "GenerationLoop",
    "GroupRequest",
    "RequestError",
    "SamplingParams",
    "StaleWeightVersionError",
    "StagedWeights",
    "TorchEngine",
    "TorchEngineCore",
    "WeightBucket",
    "WeightManifest",
    "WeightUpdateAssembler",
    "WeightUpdateError",
    "WeightUpdateReport",
    "WeightUpdateTimeout",
    "iter_buckets",
    "requests_from_prompt_groups",
    "sampling_from_config",
    "samples_to_rollouts",
]
