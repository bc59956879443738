"""The torch engine: continuous-batching sampling over any Hugging Face causal LM (the CPU default; CUDA works too).

:class:`TorchEngineCore` is synchronous and single-threaded: ``add`` queues samples, each ``step`` admits waiting
samples into free slots (one batched prefill, which also samples their first token), runs one batched decode step
over every slot, and returns the samples that finished. A finished sample frees its slot at once for a waiting one
("continuous" scheduling); ``static`` scheduling admits only into an empty batch, the baseline it is measured
against. Weights change only between steps (:meth:`TorchEngineCore.apply_weights`), so every token is sampled from
one version and each sample records the versions of its first and last token.

:class:`TorchEngine` runs a core on a worker thread behind the asynchronous :class:`GenerationEngine` interface; torch
releases the GIL in its kernels, so the event loop serving gRPC stays responsive while the thread decodes.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterable, Iterable, Literal

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ring_async.engines.generation.errors import (
    EngineUnavailableError,
    GenerationError,
    RequestError,
    WeightUpdateTimeout,
)
from ring_async.engines.generation.interface import GenerationEngine
from ring_async.engines.generation.kv_slots import SlotKVCache
from ring_async.engines.generation.sampling import RowParams, sample
from ring_async.engines.generation.stops import StopChecker
from ring_async.engines.generation.types import (
    CompletedSample,
    EngineStats,
    GroupRequest,
    LogprobsMode,
    ThroughputMeter,
    aborted_samples,
)
from ring_async.engines.generation.weights import (
    StagedWeights,
    WeightBucket,
    WeightManifest,
    WeightUpdateAssembler,
    WeightUpdateReport,
    assemble,
)

Scheduling = Literal["continuous", "static"]


@dataclass
class _Waiting:
    request: GroupRequest
    sample_index: int


@dataclass
class _Running:
    request: GroupRequest
    sample_index: int
    row: int
    tokens: list[int]
    logprobs: list[float]
    stop: StopChecker
    version_first: int
    version_last: int
    started: float


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> frozenset[int]:
    """Every id that ends a response: the tokenizer's eos and the eos id(s) of the model and generation configs
    (vLLM adds the generation config's eos ids to the stop ids the same way)."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)


class TorchEngineCore:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        max_batch_size: int = 64,
        max_model_len: int | None = None,
        max_prefill_tokens: int = 16384,
        scheduling: Scheduling = "continuous",
        logprobs_mode: LogprobsMode = "raw",
        seed: int = 0,
        policy_version: int = 0,
        check_finite_weights: bool = True,
        clock=time.time,
    ):
        if max_batch_size < 1:
            raise RequestError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if scheduling not in ("continuous", "static"):
            raise RequestError(f"scheduling must be 'continuous' or 'static', got {scheduling!r}")
        if logprobs_mode not in ("raw", "processed"):
            raise RequestError(f"logprobs_mode must be 'raw' or 'processed', got {logprobs_mode!r}")
        config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
        layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
        if layer_types != {"full_attention"}:
            raise EngineUnavailableError(
                f"the torch engine serves full-attention decoders; this model has layer types {sorted(layer_types)}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.max_model_len = int(max_model_len or getattr(config, "max_position_embeddings", 0) or 4096)
        self.max_prefill_tokens = max_prefill_tokens
        self.scheduling = scheduling
        self.logprobs_mode: LogprobsMode = logprobs_mode
        self.policy_version = policy_version
        self.check_finite_weights = check_finite_weights
        self._clock = clock
        self._num_layers = int(config.num_hidden_layers)
        self._vocab = int(model.get_output_embeddings().weight.shape[0])
        self._eos = eos_token_ids(model, tokenizer)
        self._pad_id = int(getattr(tokenizer, "pad_token_id", None) or getattr(config, "pad_token_id", None) or 0)
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(seed)
        self._waiting: deque[_Waiting] = deque()
        self._groups: dict[str, int] = {}  # group id -> samples not yet finished
        self._slots: list[_Running | None] = []
        self._cache = SlotKVCache(self._num_layers)
        self._last_tokens = torch.zeros(0, dtype=torch.long, device=self.device)
        self._positions = torch.zeros(0, dtype=torch.long, device=self.device)
        self._first_column: list[int] = []
        self._row_params: RowParams | None = None
        self._manifest: WeightManifest | None = None
        self.meter = ThroughputMeter()
        self.completed_samples = 0
        self.weight_updates = 0
        self.refused_weight_updates = 0
        self.relayouts = 0

    # ------------------------------------------------------------------------------------------- requests

    def validate(self, request: GroupRequest) -> None:
        """Refuse a request this engine cannot serve, before it is queued."""
        if request.group_id in self._groups:
            raise RequestError(f"group {request.group_id} is already being generated")
        if len(request.prompt_token_ids) >= self.max_model_len:
            raise RequestError(
                f"group {request.group_id}: prompt of {len(request.prompt_token_ids)} tokens leaves no room in the "
                f"context of {self.max_model_len} tokens"
            )
        if max(request.prompt_token_ids) >= self._vocab:
            raise RequestError(f"group {request.group_id}: token id {max(request.prompt_token_ids)} >= vocabulary {self._vocab}")
        if request.sampling.stop and self.tokenizer is None:
            raise RequestError(f"group {request.group_id}: stop strings need a tokenizer, and the engine has none")

    def add(self, request: GroupRequest) -> None:
        self.validate(request)
        self._groups[request.group_id] = request.sampling.n
        self._waiting.extend(_Waiting(request, i) for i in range(request.sampling.n))

    @torch.inference_mode()  # releasing a row writes the cache's mask, an inference tensor
    def abort(self, group_id: str) -> list[CompletedSample]:
        """Stop a group's samples now; the running ones come back with finish reason "abort"."""
        if group_id not in self._groups:
            return []
        aborted = [w for w in self._waiting if w.request.group_id == group_id]
        self._waiting = deque(w for w in self._waiting if w.request.group_id != group_id)
        done = []
        for seq in [s for s in self._slots if s is not None and s.request.group_id == group_id]:
            done.append(self._finish(seq, "abort", None, None))
        for w in aborted:
            done.extend(aborted_samples(w.request, self.policy_version, [w.sample_index]))
        self._groups.pop(group_id, None)
        return done

    @torch.inference_mode()
    def abort_started_before(self, version: int) -> list[CompletedSample]:
        """Stop the running samples that began under a policy version older than ``version`` (finish reason
        "abort"); returns them."""
        return [self._finish(seq, "abort", None, None) for seq in list(self._slots)
                if seq is not None and seq.version_first < version]

    @property
    def running(self) -> int:
        return sum(s is not None for s in self._slots)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def has_work(self) -> bool:
        return bool(self._waiting) or self.running > 0

    # ------------------------------------------------------------------------------------------- stepping

    @torch.inference_mode()
    def step(self) -> list[CompletedSample]:
        """Admit waiting samples, decode one token for every running one; returns the samples that finished."""
        finished = self._admit()
        if self.running:
            finished.extend(self._decode())
        self._maybe_compact()
        return finished

    def run_to_completion(self) -> list[CompletedSample]:
        done: list[CompletedSample] = []
        while self.has_work:
            done.extend(self.step())
        return done

    def _free_rows(self) -> list[int]:
        return [i for i, s in enumerate(self._slots) if s is None]

    def _admit(self) -> list[CompletedSample]:
        if not self._waiting:
            return []
        if self.scheduling == "static" and self.running:
            return []
        free = self._free_rows()
        capacity = len(free) + self.max_batch_size - len(self._slots)
        joiners: list[_Waiting] = []
        longest = 0
        while self._waiting and len(joiners) < capacity:
            length = len(self._waiting[0].request.prompt_token_ids)
            if joiners and max(longest, length) * (len(joiners) + 1) > self.max_prefill_tokens:
                break
            joiners.append(self._waiting.popleft())
            longest = max(longest, length)
        if not joiners:
            return []
        # The K samples of a group share one prompt: prefill it once and copy its keys and values into each of their
        # rows (RL responses are short, so prefill would otherwise cost as much as decoding).
        prompts: dict[int, int] = {}  # id(request) -> its row in the prefill
        for w in joiners:
            prompts.setdefault(id(w.request), len(prompts))
        sources = [prompts[id(w.request)] for w in joiners]
        unique = list({id(w.request): w for w in joiners}.values())
        prefill, last_logits = self._prefill(unique, longest)
        rows = self._place(joiners, free, prefill, longest, sources)
        params = [w.request.sampling for w in joiners]
        tokens, logprobs = sample(last_logits[sources], RowParams.build(params, self.device), self._generator,
                                  self.logprobs_mode)
        self._last_tokens[rows] = tokens
        now = time.perf_counter()
        finished = []
        for w, row, token, logprob in zip(joiners, rows, tokens.tolist(), logprobs.tolist()):
            prompt_len = len(w.request.prompt_token_ids)
            max_new = min(w.request.sampling.max_tokens, self.max_model_len - prompt_len)
            seq = _Running(
                w.request, w.sample_index, row, [], [], StopChecker(w.request.sampling, self._eos, max_new, self.tokenizer),
                self.policy_version, self.policy_version, now,
            )
            self._slots[row] = seq
            done = self._append(seq, token, logprob)
            if done is not None:
                finished.append(done)
        self._row_params = RowParams.build([s.request.sampling if s else None for s in self._slots], self.device)
        self.meter.add(len(joiners))
        return finished

    def _prefill(self, joiners: list[_Waiting], longest: int) -> tuple[DynamicCache, torch.Tensor]:
        batch = len(joiners)
        input_ids = torch.full((batch, longest), self._pad_id, dtype=torch.long)
        mask = torch.zeros((batch, longest), dtype=torch.long)
        for i, w in enumerate(joiners):
            prompt = w.request.prompt_token_ids
            input_ids[i, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, longest - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: cache},
        )
        return cache, out.logits[:, -1, :]

    def _place(self, joiners: list[_Waiting], free: list[int], prefill: DynamicCache, longest: int,
               sources: list[int]) -> list[int]:
        """Give each joiner a row (holes first, then new rows) and copy its prompt's keys and values there (from row
        ``sources[i]`` of ``prefill``)."""
        rows = free[: len(joiners)]
        extra = len(joiners) - len(rows)
        cache = self._cache
        back = max(w.request.sampling.max_tokens for w in joiners) + 1
        needs_relayout = (
            cache.mask is None or extra > 0 or cache.length < longest or cache.length + 1 > cache.capacity
        )
        if needs_relayout:
            live = [i for i, s in enumerate(self._slots) if s is not None]
            self._relayout(keep=list(range(len(self._slots))), rows=len(self._slots) + extra, front=longest,
                           back=back, template=prefill, live=live)
            rows = rows + list(range(len(self._slots) - extra, len(self._slots)))
        for i, (w, row) in enumerate(zip(joiners, rows)):
            prompt_len = len(w.request.prompt_token_ids)
            self._first_column[row] = cache.write_prompt(row, prefill, sources[i], prompt_len)
            self._positions[row] = prompt_len
        return rows

    def _relayout(self, *, keep: list[int], rows: int, front: int, back: int, template, live: list[int]) -> None:
        cache = self._cache
        live_from = min((self._first_column[r] for r in live), default=cache.length)
        shift = cache.relayout(keep_rows=keep, rows=rows, live_from=live_from, front=front, back=back, template=template)
        self.relayouts += 1
        remap = {old: new for new, old in enumerate(keep)}
        slots: list[_Running | None] = [None] * rows
        first_column = [0] * rows
        last_tokens = torch.full((rows,), self._pad_id, dtype=torch.long, device=self.device)
        positions = torch.zeros(rows, dtype=torch.long, device=self.device)
        for old, new in remap.items():
            seq = self._slots[old]
            if seq is not None:
                seq.row = new
                slots[new] = seq
                first_column[new] = self._first_column[old] + shift
                last_tokens[new] = self._last_tokens[old]
                positions[new] = self._positions[old]
        self._slots, self._first_column = slots, first_column
        self._last_tokens, self._positions = last_tokens, positions
        self._row_params = RowParams.build([s.request.sampling if s else None for s in self._slots], self.device)

    def _decode(self) -> list[CompletedSample]:
        cache = self._cache
        if cache.length + 1 > cache.capacity:
            live = [i for i, s in enumerate(self._slots) if s is not None]
            self._relayout(keep=list(range(len(self._slots))), rows=len(self._slots), front=0, back=1,
                           template=None, live=live)
        mask = cache.advance_mask()
        out = self.model(
            input_ids=self._last_tokens.unsqueeze(-1),
            attention_mask=mask,
            position_ids=self._positions.unsqueeze(-1),
            use_cache=True,
            **{self._cache_arg: cache},
        )
        tokens, logprobs = sample(out.logits[:, -1, :], self._row_params, self._generator, self.logprobs_mode)
        self._last_tokens = tokens
        self._positions += 1
        finished = []
        generated = 0
        for seq, token, logprob in zip(list(self._slots), tokens.tolist(), logprobs.tolist()):
            if seq is None:
                continue
            generated += 1
            seq.version_last = self.policy_version
            done = self._append(seq, token, logprob)
            if done is not None:
                finished.append(done)
        self.meter.add(generated)
        return finished

    def _append(self, seq: _Running, token: int, logprob: float) -> CompletedSample | None:
        seq.tokens.append(token)
        seq.logprobs.append(logprob)
        decision = seq.stop.add(token)
        if decision is None:
            return None
        return self._finish(seq, decision.reason, decision.stop_reason, decision.text)

    def _finish(self, seq: _Running, reason, stop_reason, text) -> CompletedSample:
        self._slots[seq.row] = None
        self._cache.release(seq.row)
        group = seq.request.group_id
        self._groups[group] -= 1
        if self._groups[group] == 0:
            del self._groups[group]
        self.completed_samples += 1
        request = seq.request
        return CompletedSample(
            group_id=group,
            prompt_id=request.prompt_id,
            sample_index=seq.sample_index,
            prompt_token_ids=request.prompt_token_ids,
            token_ids=np.asarray(seq.tokens, dtype=np.int32),
            logprobs=np.asarray(seq.logprobs, dtype=np.float32),
            finish_reason=reason,
            stop_reason=stop_reason,
            policy_version_first=seq.version_first,
            policy_version_last=seq.version_last,
            generation_s=time.perf_counter() - seq.started,
            completed_at=self._clock(),
            reward_type=request.reward_type,
            metadata=request.metadata,
            text=text,
        )

    def _maybe_compact(self) -> None:
        """With nobody waiting, drop holes once they are a quarter of the batch (the tail of a workload): each
        decode step costs in proportion to the rows, holes included."""
        if self._waiting or not self._slots:
            return
        live = [i for i, s in enumerate(self._slots) if s is not None]
        holes = len(self._slots) - len(live)
        if holes == 0 or (live and holes * 4 < len(self._slots)):
            return
        if not live:
            self._slots, self._first_column = [], []
            self._cache = SlotKVCache(self._num_layers)
            self._last_tokens = torch.zeros(0, dtype=torch.long, device=self.device)
            self._positions = torch.zeros(0, dtype=torch.long, device=self.device)
            return
        self._relayout(keep=live, rows=len(live), front=0, back=1, template=None, live=live)

    # ------------------------------------------------------------------------------------------- weights

    @property
    def manifest(self) -> WeightManifest:
        if self._manifest is None:
            self._manifest = WeightManifest.from_module(self.model)
        return self._manifest

    def assembler(self, deadline: float | None = None) -> WeightUpdateAssembler:
        return WeightUpdateAssembler(
            self.manifest, self.policy_version, device=self.device, check_finite=self.check_finite_weights,
            deadline=deadline,
        )

    @torch.no_grad()
    def apply_weights(self, staged: StagedWeights) -> int:
        """Copy a checked update into the live weights; call only between steps. Returns the new version."""
        if staged.version <= self.policy_version:
            raise GenerationError(
                f"weight update to version {staged.version} is not newer than the served version {self.policy_version}"
            )
        live = self.model.state_dict(keep_vars=True)
        for name, tensor in staged.tensors.items():
            live[name].data.copy_(tensor)
        self.policy_version = staged.version
        self.weight_updates += 1
        return staged.version

    def update_weights(self, buckets: Iterable[WeightBucket], timeout_s: float | None = None) -> WeightUpdateReport:
        """Receive, check and apply a whole update (synchronous; between steps). Refused updates change nothing."""
        try:
            staged = assemble(
                buckets, self.manifest, self.policy_version, device=self.device,
                check_finite=self.check_finite_weights, timeout_s=timeout_s,
            )
            self.apply_weights(staged)
        except GenerationError:
            self.refused_weight_updates += 1
            raise
        return staged.report(time.monotonic())

    def stats(self, paused: bool = False) -> EngineStats:
        return EngineStats(
            engine="torch",
            policy_version=self.policy_version,
            running=self.running,
            waiting=self.waiting,
            paused=paused,
            completed_samples=self.completed_samples,
            generated_tokens=self.meter.total,
            tokens_per_s=self.meter.rate(),
            weight_updates=self.weight_updates,
            refused_weight_updates=self.refused_weight_updates,
        )


class TorchEngine(GenerationEngine):
    """A :class:`TorchEngineCore` on its own thread, behind the asynchronous engine interface."""

    name = "torch"

    def __init__(self, core: TorchEngineCore):
        super().__init__()
        self.core = core
        self._cond = threading.Condition()
        self._inbox: list[GroupRequest] = []
        self._aborts: list[str] = []
        self._abort_before: int | None = None  # stop the running samples begun under an older version
        self._update: tuple[StagedWeights, asyncio.Future, asyncio.AbstractEventLoop] | None = None
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def policy_version(self) -> int:
        return self.core.policy_version

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._bind_loop()
        self._thread = threading.Thread(target=self._run, name="torch-engine", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        self._fail_pending_update(EngineUnavailableError("the engine was closed"))

    def submit(self, request: GroupRequest) -> None:
        self._check_alive()
        with self._cond:
            queued = {r.group_id for r in self._inbox}
            if request.group_id in queued:
                raise RequestError(f"group {request.group_id} is already being generated")
            self.core.validate(request)
            self._inbox.append(request)
            self._expect(request)
            self._cond.notify_all()

    def abort(self, group_id: str) -> None:
        with self._cond:
            self._aborts.append(group_id)
            self._cond.notify_all()

    def abort_started_before(self, version: int) -> None:
        with self._cond:
            self._abort_before = max(version, self._abort_before or version)
            self._cond.notify_all()

    async def pause(self) -> None:
        with self._cond:
            self._paused = True

    async def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def stats(self) -> EngineStats:
        return self.core.stats(paused=self._paused)

    async def update_weights(
        self, buckets: AsyncIterable[WeightBucket] | Iterable[WeightBucket], *, timeout_s: float | None = None
    ) -> WeightUpdateReport:
        """Receive (checking each bucket as it arrives), then apply at the next step boundary. A refused or timed-out
        update leaves the served weights and version untouched: a timeout error always means nothing was applied."""
        self._check_alive()
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        assembler = self.core.assembler(deadline)
        done: asyncio.Future | None = None
        try:
            async with asyncio.timeout(timeout_s):
                if hasattr(buckets, "__aiter__"):
                    async for bucket in buckets:  # type: ignore[union-attr]
                        assembler.add(bucket)
                else:
                    for bucket in buckets:  # type: ignore[union-attr]
                        assembler.add(bucket)
                        await asyncio.sleep(0)  # let the event loop breathe between buckets
                staged = assembler.finish()
                done = loop.create_future()
                with self._cond:
                    if self._update is not None:
                        raise GenerationError("another weight update is waiting to be applied")
                    self._update = (staged, done, loop)
                    self._cond.notify_all()
                return await asyncio.shield(done)
        except TimeoutError:
            if done is not None and not self._retract(done):
                # The worker thread already took it: the copy is short and atomic, so report what it did.
                return await done
            self.core.refused_weight_updates += 1
            assembler._deadline = 0.0
            try:
                assembler.check_deadline()
            except WeightUpdateTimeout as err:
                raise err from None
            raise  # pragma: no cover - check_deadline always raises past a zero deadline
        except GenerationError:
            self.core.refused_weight_updates += 1
            raise

    def _retract(self, done: asyncio.Future) -> bool:
        """Withdraw an update the worker thread has not taken yet; False when it already took it."""
        with self._cond:
            if self._update is not None and self._update[1] is done:
                self._update = None
                return True
            return False

    # ------------------------------------------------------------------------------------------- worker thread

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (
                        self._stopping or self._inbox or self._aborts or self._update is not None
                        or self._abort_before is not None
                        or (self.core.has_work and not self._paused)
                    ):
                        self._cond.wait()
                    if self._stopping:
                        return
                    inbox, self._inbox = self._inbox, []
                    aborts, self._aborts = self._aborts, []
                    update, self._update = self._update, None
                    abort_before, self._abort_before = self._abort_before, None
                    paused = self._paused
                for request in inbox:
                    try:
                        self.core.add(request)
                    except RequestError:  # checked at submit; only a race between two submits lands here
                        self._deliver_many(aborted_samples(request, self.core.policy_version))
                for group_id in aborts:
                    self._deliver_many(self.core.abort(group_id))
                if abort_before is not None:
                    self._deliver_many(self.core.abort_started_before(abort_before))
                if update is not None:
                    self._apply(update)
                if not paused and self.core.has_work:
                    self._deliver_many(self.core.step())
        except BaseException as err:  # surfaced to every waiter; the engine is dead after this
            self._error = err
            self._fail(err)
            self._fail_pending_update(err)

    def _apply(self, update: tuple[StagedWeights, asyncio.Future, asyncio.AbstractEventLoop]) -> None:
        staged, done, loop = update
        try:
            self.core.apply_weights(staged)
        except GenerationError as err:
            loop.call_soon_threadsafe(_settle, done, None, err)
            return
        loop.call_soon_threadsafe(_settle, done, staged.report(time.monotonic()), None)

    def _fail_pending_update(self, err: BaseException) -> None:
        with self._cond:
            update, self._update = self._update, None
        if update is not None:
            update[2].call_soon_threadsafe(_settle, update[1], None, err)

    def _check_alive(self) -> None:
        if self._error is not None:
            raise EngineUnavailableError(f"the torch engine stopped after an error: {self._error!r}")
        if self._stopping:
            raise EngineUnavailableError("the engine was closed")


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


__all__ = ["TorchEngine", "TorchEngineCore", "eos_token_ids"]

