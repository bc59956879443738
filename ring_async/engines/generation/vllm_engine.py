"""The vLLM engine: the generation interface over vLLM's ``AsyncLLM`` (GPU; the optional ``vllm`` extra).

Each of a group's K samples is its own vLLM request (``n=1``, final output only), so a sample comes back the moment
it finishes. Sampling parameters map one to one (vLLM's semantics are the reference the torch engine follows);
logprobs are vLLM's for the sampled token (``logprobs=0``), in ``raw_logprobs`` mode unless
``logprobs_mode="processed"``.

Weight updates: bucket checks (checksum, safetensors framing, names, shapes, dtypes) run here against a manifest read
from the checkpoint's safetensors headers; checked buckets are staged on every worker through
``collective_rpc`` and committed with one more call, which vLLM runs between engine steps (see :mod:`.vllm_worker`).
On GPU clusters the learner can instead broadcast over NCCL (:meth:`VllmEngine.init_weight_broadcast`,
:meth:`VllmEngine.update_weights_broadcast`).

Versions: vLLM does not say at which step an update landed for a given request, so a sample records the version
current when it was submitted and the one current when it finished; a sample that may have spanned an update is
therefore always marked (the record can only over-state mixing, never hide it).

Importing this module never imports vLLM; constructing a :class:`VllmEngine` without vLLM or a GPU raises
:class:`EngineUnavailableError`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from pathlib import Path
from typing import AsyncIterable, Iterable

import numpy as np
import torch

from ring_async.engines.generation.errors import (
    EngineUnavailableError,
    GenerationError,
    RequestError,
    StaleWeightVersionError,
    WeightUpdateError,
    WeightUpdateTimeout,
)
from ring_async.engines.generation.interface import GenerationEngine
from ring_async.engines.generation.types import (
    CompletedSample,
    EngineStats,
    GroupRequest,
    LogprobsMode,
    SamplingParams,
    ThroughputMeter,
)
from ring_async.engines.generation.vllm_worker import EXTENSION
from ring_async.engines.generation.weights import (
    WeightBucket,
    WeightManifest,
    WeightUpdateAssembler,
    WeightUpdateReport,
)

def vllm_unavailable_reason() -> str | None:
    """Why the vLLM engine cannot run here, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'ring-async[vllm]')"
    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is visible"
    return None


class VllmEngine(GenerationEngine):
    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "auto",
        max_batch_size: int = 64,
        max_model_len: int | None = None,
        logprobs_mode: LogprobsMode = "raw",
        seed: int = 0,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = False,
        check_finite_weights: bool = True,
        policy_version: int = 0,
    ):
        super().__init__()
        reason = vllm_unavailable_reason()
        if reason is not None:
            raise EngineUnavailableError(reason)
        self.model_path = Path(model_path)
        self._dtype = dtype
        self._args = dict(
            model=str(self.model_path),
            dtype=dtype,
            seed=seed,
            max_num_seqs=max_batch_size,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager,
            worker_extension_cls=EXTENSION,
        )
        if logprobs_mode == "processed":
            # Only passed when asked for: raw is vLLM's default, and older releases lack the option.
            self._args["logprobs_mode"] = "processed_logprobs"
        self._check_finite = check_finite_weights
        self._version = policy_version
        self._llm = None
        self._tasks: dict[str, set[asyncio.Task]] = {}
        self._started_under: dict[asyncio.Task, int] = {}  # each running sample's policy_version_first
        self._held: list[GroupRequest] = []
        self._paused = False
        self._meter = ThroughputMeter()
        self._completed = 0
        self._updates = 0
        self._refused = 0
        self._manifest: WeightManifest | None = None
        self._update_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------- lifecycle

    @property
    def policy_version(self) -> int:
        return self._version

    async def start(self) -> None:
        if self._llm is not None:
            return
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._bind_loop()
        args = AsyncEngineArgs(**{k: v for k, v in self._args.items() if v is not None})
        self._llm = AsyncLLM.from_engine_args(args)
        served = self._llm.model_config.dtype
        self._manifest = WeightManifest.from_checkpoint(self.model_path, dtype=served)

    async def close(self) -> None:
        for tasks in list(self._tasks.values()):
            for task in tasks:
                task.cancel()
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    # ------------------------------------------------------------------------------------------- requests

    def submit(self, request: GroupRequest) -> None:
        if self._llm is None:
            raise EngineUnavailableError("the vllm engine was not started")
        if request.group_id in self._tasks or any(r.group_id == request.group_id for r in self._held):
            raise RequestError(f"group {request.group_id} is already being generated")
        max_len = self._llm.model_config.max_model_len
        if len(request.prompt_token_ids) >= max_len:
            raise RequestError(
                f"group {request.group_id}: prompt of {len(request.prompt_token_ids)} tokens leaves no room in the "
                f"context of {max_len} tokens"
            )
        self._expect(request)
        if self._paused:
            self._held.append(request)
        else:
            self._launch(request)

    def _launch(self, request: GroupRequest) -> None:
        tasks = self._tasks.setdefault(request.group_id, set())
        for index in range(request.sampling.n):
            task = asyncio.get_running_loop().create_task(self._sample(request, index, self._version))
            tasks.add(task)
            self._started_under[task] = self._version
            task.add_done_callback(lambda t, g=request.group_id: self._forget(g, t))

    def _forget(self, group_id: str, task: asyncio.Task) -> None:
        self._started_under.pop(task, None)
        tasks = self._tasks.get(group_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[group_id]

    async def _sample(self, request: GroupRequest, index: int, version_first: int) -> None:
        from vllm.inputs import TokensPrompt

        started = time.perf_counter()
        request_id = f"{request.group_id}/{index}#{uuid.uuid4().hex[:8]}"
        final = None
        try:
            async for output in self._llm.generate(
                TokensPrompt(prompt_token_ids=list(request.prompt_token_ids)),
                _vllm_sampling(request.sampling),
                request_id=request_id,
            ):
                final = output
        except asyncio.CancelledError:
            await self._llm.abort(request_id)
            self._put_all([_sample_of(request, index, None, "abort", version_first, self._version, started)])
            raise
        completion = final.outputs[0]
        sample = _sample_of(request, index, completion, completion.finish_reason or "abort", version_first,
                            self._version, started)
        self._meter.add(sample.num_tokens)
        self._completed += 1
        self._put_all([sample])

    def abort(self, group_id: str) -> None:
        held = [r for r in self._held if r.group_id == group_id]
        self._held = [r for r in self._held if r.group_id != group_id]
        for request in held:
            self._put_all([_sample_of(request, i, None, "abort", self._version, self._version, time.perf_counter())
                           for i in range(request.sampling.n)])
        for task in list(self._tasks.get(group_id, ())):
            task.cancel()

    def abort_started_before(self, version: int) -> None:
        for task, started_under in list(self._started_under.items()):
            if started_under < version:
                task.cancel()

    async def pause(self) -> None:
        """New requests are held back; those already in vLLM run to completion (vLLM decodes them on its own)."""
        self._paused = True

    async def resume(self) -> None:
        self._paused = False
        held, self._held = self._held, []
        for request in held:
            self._launch(request)

    @property
    def paused(self) -> bool:
        return self._paused

    def stats(self) -> EngineStats:
        running = sum(len(t) for t in self._tasks.values())
        return EngineStats(
            engine="vllm", policy_version=self._version, running=running,
            waiting=sum(r.sampling.n for r in self._held), paused=self._paused, completed_samples=self._completed,
            generated_tokens=self._meter.total, tokens_per_s=self._meter.rate(), weight_updates=self._updates,
            refused_weight_updates=self._refused,
        )

    # ------------------------------------------------------------------------------------------- weights

    async def update_weights(
        self, buckets: AsyncIterable[WeightBucket] | Iterable[WeightBucket], *, timeout_s: float | None = None
    ) -> WeightUpdateReport:
        if self._llm is None:
            raise EngineUnavailableError("the vllm engine was not started")
        async with self._update_lock:
            assembler = WeightUpdateAssembler(
                self._manifest, self._version, device="cpu", check_finite=self._check_finite
            )
            try:
                async with asyncio.timeout(timeout_s):
                    async for bucket in _aiter(buckets):
                        assembler.add(bucket)
                        await self._llm.collective_rpc("ring_async_stage_bucket", args=(bucket.version, bucket.payload))
                    staged = assembler.finish()
                    await self._llm.collective_rpc("ring_async_commit", args=(staged.version,))
            except TimeoutError:
                await self._discard()
                raise WeightUpdateTimeout(
                    f"weight update to version {assembler.version} timed out after {timeout_s} s with "
                    f"{assembler.received} of {assembler.count or '?'} buckets received; still serving version "
                    f"{self._version}"
                ) from None
            except GenerationError:
                await self._discard()
                raise
            self._version = staged.version
            self._updates += 1
            return staged.report(time.monotonic())

    async def _discard(self) -> None:
        self._refused += 1
        await self._llm.collective_rpc("ring_async_discard")

    async def init_weight_broadcast(self, host: str, port: int, rank_offset: int, world_size: int) -> None:
        """Join the learner's NCCL group (the learner calls :func:`.vllm_worker.open_weight_broadcast` with the same
        host, port and world size: 1 + the number of vLLM workers)."""
        await self._llm.collective_rpc("ring_async_init_weight_group", args=(host, port, rank_offset, world_size))

    async def update_weights_broadcast(
        self, version: int, specs: list[tuple[str, torch.dtype, tuple[int, ...]]], *, timeout_s: float | None = None
    ) -> WeightUpdateReport:
        """Receive ``specs`` (checkpoint names, checked against the manifest first) over NCCL, then commit."""
        if version <= self._version:
            raise StaleWeightVersionError(f"version {version} is not newer than the served version {self._version}")
        for name, dtype, shape in specs:
            spec = self._manifest.specs.get(name)
            if spec is None or spec.shape != tuple(shape) or spec.dtype != dtype:
                raise WeightUpdateError(f"broadcast tensor {name!r} {dtype} {tuple(shape)} does not match the model")
        started = time.monotonic()
        wire = [(name, str(dtype).removeprefix("torch."), list(shape)) for name, dtype, shape in specs]
        async with self._update_lock:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._llm.collective_rpc("ring_async_receive_broadcast", args=(version, wire))
                    await self._llm.collective_rpc("ring_async_commit", args=(version,))
            except TimeoutError:
                await self._discard()
                raise WeightUpdateTimeout(
                    f"NCCL weight update to version {version} timed out after {timeout_s} s; "
                    f"still serving version {self._version}"
                ) from None
            self._version = version
            self._updates += 1
        nbytes = sum(int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size() for _, dtype, shape in specs)
        return WeightUpdateReport(version, 0, len(specs), nbytes, time.monotonic() - started)


def _vllm_sampling(params: SamplingParams):
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    return VllmSamplingParams(
        n=1,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k if params.top_k > 0 else -1,
        max_tokens=params.max_tokens,
        stop=list(params.stop) or None,
        stop_token_ids=list(params.stop_token_ids) or None,
        ignore_eos=params.ignore_eos,
        include_stop_str_in_output=params.include_stop_str_in_output,
        logprobs=0,  # the sampled token's logprob only
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def _sample_of(request: GroupRequest, index: int, completion, reason: str, first: int, last: int,
               started: float) -> CompletedSample:
    if completion is None:
        tokens, logprobs, stop_reason, text = [], [], None, None
    else:
        tokens = list(completion.token_ids)
        # One dict per position, {token id: Logprob}; with logprobs=0 it holds just the sampled token.
        logprobs = [position[token].logprob for position, token in zip(completion.logprobs or [], tokens)]
        stop_reason, text = completion.stop_reason, completion.text
    return CompletedSample(
        group_id=request.group_id,
        prompt_id=request.prompt_id,
        sample_index=index,
        prompt_token_ids=request.prompt_token_ids,
        token_ids=np.asarray(tokens, dtype=np.int32),
        logprobs=np.asarray(logprobs, dtype=np.float32),
        finish_reason=reason,  # type: ignore[arg-type]
        stop_reason=stop_reason,
        policy_version_first=first,
        policy_version_last=last,
        generation_s=time.perf_counter() - started,
        completed_at=time.time(),
        reward_type=request.reward_type,
        metadata=request.metadata,
        text=text,
    )


async def _aiter(items):
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
            await asyncio.sleep(0)
