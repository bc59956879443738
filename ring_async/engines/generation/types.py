"""What goes into a generation engine and what comes out of it.

A :class:`GroupRequest` is one leased prompt to be sampled ``K = sampling.n`` times; each of the K samples finishes
on its own and comes back as a :class:`CompletedSample` as soon as it is done (not when its group or batch is).
Sampling parameters follow vLLM's ``SamplingParams`` names and meaning, so the same request runs on either engine.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ring_async.data.schemas import rollout_id
from ring_async.engines.generation.errors import RequestError

# vLLM treats a temperature below this as greedy decoding (argmax), and so do we.
GREEDY_TEMPERATURE = 1e-5

FinishReason = Literal["stop", "length", "abort"]
LogprobsMode = Literal["raw", "processed"]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling, with vLLM's names and semantics.

    ``temperature`` < 1e-5 is greedy. ``top_k`` 0 keeps every token. ``top_p`` keeps the smallest set of most likely
    tokens whose probability reaches ``top_p`` (after temperature and top-k, as in vLLM). A sample ends at an eos id
    (unless ``ignore_eos``), at one of ``stop_token_ids`` (kept in the tokens), when its decoded text contains one of
    ``stop`` (the tokens up to the one completing the string are kept; the text is cut before the string unless
    ``include_stop_str_in_output``), or after ``max_tokens`` tokens or at the engine's context length ("length").
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        # Lists from YAML or protobuf become tuples so the object stays hashable and immutable.
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.n < 1:
            raise RequestError(f"sampling n (samples per group) must be at least 1, got {self.n}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise RequestError(f"sampling temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"sampling top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise RequestError(f"sampling top_k must be >= 0 (0 keeps every token), got {self.top_k}")
        if self.max_tokens < 1:
            raise RequestError(f"sampling max_tokens must be at least 1, got {self.max_tokens}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise RequestError(f"sampling stop strings must be non-empty strings, got {list(self.stop)!r}")
        if any(t < 0 for t in self.stop_token_ids):
            raise RequestError(f"sampling stop_token_ids must be >= 0, got {list(self.stop_token_ids)}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE


@dataclass(frozen=True)
class GroupRequest:
    """One prompt to be sampled ``sampling.n`` times under one group id (a leased ``prompt_group`` row)."""

    group_id: str
    prompt_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    reward_type: str = "math"
    metadata: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_token_ids", tuple(int(t) for t in self.prompt_token_ids))
        if not self.group_id:
            raise RequestError("a generation request needs a group_id")
        if not self.prompt_token_ids:
            raise RequestError(f"group {self.group_id}: the prompt has no tokens")
        if min(self.prompt_token_ids) < 0:
            raise RequestError(f"group {self.group_id}: negative token id in the prompt")


@dataclass(frozen=True, eq=False)
class CompletedSample:
    """One finished sample: its tokens, the behaviour logprob of each, why it ended and which weights produced it.

    ``policy_version_first``/``_last`` are the weight versions of its first and last sampled token; they differ when
    a weight update landed while it was being decoded (the sample then mixes versions, and says so).
    """

    group_id: str
    prompt_id: str
    sample_index: int
    prompt_token_ids: tuple[int, ...]
    token_ids: np.ndarray  # int32
    logprobs: np.ndarray  # float32, one per token
    finish_reason: FinishReason
    stop_reason: int | str | None
    policy_version_first: int
    policy_version_last: int
    generation_s: float
    completed_at: float
    reward_type: str = "math"
    metadata: bytes | None = None
    text: str | None = None

    @property
    def rollout_id(self) -> str:
        return rollout_id(self.group_id, self.sample_index)

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.size)

    @property
    def mixes_versions(self) -> bool:
        return self.policy_version_first != self.policy_version_last


def aborted_samples(request: GroupRequest, version: int, indices: range | list[int] | None = None) -> list[CompletedSample]:
    """Empty samples with finish reason "abort": how a group that will not be generated still closes."""
    now = time.time()
    return [
        CompletedSample(
            group_id=request.group_id, prompt_id=request.prompt_id, sample_index=i,
            prompt_token_ids=request.prompt_token_ids, token_ids=np.zeros(0, np.int32),
            logprobs=np.zeros(0, np.float32), finish_reason="abort", stop_reason=None, policy_version_first=version,
            policy_version_last=version, generation_s=0.0, completed_at=now, reward_type=request.reward_type,
            metadata=request.metadata,
        )
        for i in (indices if indices is not None else range(request.sampling.n))
    ]


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for GetStatus and metrics."""

    engine: str
    policy_version: int
    running: int
    waiting: int
    paused: bool
    completed_samples: int
    generated_tokens: int
    tokens_per_s: float
    weight_updates: int
    refused_weight_updates: int


class ThroughputMeter:
    """Generated tokens per second over a sliding window (the recent rate, not the lifetime average). Thread-safe:
    the engine thread adds while the event loop reads."""

    def __init__(self, window_s: float = 60.0, clock=time.monotonic):
        self._window = window_s
        self._clock = clock
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self.total = 0

    def add(self, tokens: int) -> None:
        now = self._clock()
        with self._lock:
            self._events.append((now, tokens))
            self.total += tokens
            self._trim(now)

    def rate(self) -> float:
        now = self._clock()
        with self._lock:
            self._trim(now)
            if not self._events:
                return 0.0
            span = max(now - self._events[0][0], 1e-3)
            return sum(n for _, n in self._events) / span

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self._window:
            self._events.popleft()
