"""The Verifier core: scores batches of rollouts, routing each by reward type; the object a gRPC service wraps.

    core = VerifierCore()
    scored = await core.score([RolloutToScore("r1", "math", response, answer="42"), ...])
    core.submit_reward("r7", 0.8)            # an external reward model answering a waiting rollout
    core.submit_reward("r8", None)           # ... or saying it cannot score this one (unverifiable, masked)
    core.stats()                             # verdict counts by reward type, latency percentiles
    await core.score(batch, on_external=f)   # external rollouts not awaited: pending now, f(result) later

- ``math``: the math checker (front end, fast path, worker pool with hard deadlines);
- ``code``: the program (last fenced block of the final answer) judged in the sandbox; language from the record's
  ``metadata["lang"]``, else the tests file's ``lang``, else Python;
- ``external``: waits for ``submit_reward`` (Control.SubmitRewards) up to ``external_timeout_s``, then
  ``unverifiable``. A reward that arrives before its rollout is kept (bounded) and used when the rollout comes.
  With ``score(..., on_external=f)`` (what the gRPC service uses) the batch does not wait: each external rollout is
  registered before ``score`` returns, comes back ``pending_external``, and ``f`` gets its result when it is decided;
  at most ``max_awaiting_external`` wait that way, a batch beyond it is refused (VerifierBusyError).

Every result carries ``reward=None`` and ``masked=True`` for verdicts that must not train (``unverifiable``,
``sandbox_error``); they are counted, never scored 0. A response the generator stopped unfinished (finish reason
``abort``: it had gone stale, or its prompt could not be served) is ``unverifiable`` at once, unscored.

Concurrency is bounded: code runs on at most ``code_concurrency`` jails at once (default: the cores), math keeps at
most a few requests per worker in flight, and at most ``max_pending`` rollouts are admitted at a time across all
``score`` calls; a caller beyond that waits (back-pressure) instead of growing a queue. Input is validated for the
whole batch before any of it is scored, and bad input raises VerifierError naming the record and the field.

Gauges for a status RPC: ``queued`` (math/code rollouts received, not yet holding a math or sandbox slot),
``running`` (holding one), and :meth:`VerifierCore.work_latency` (seconds a slot was held, over a recent window).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

from ring_async.verifiers import verdicts as V
from ring_async.verifiers.code_answer import extract_program
from ring_async.verifiers.errors import VerifierBusyError, VerifierClosedError, VerifierError
from ring_async.verifiers.math_checker import MathChecker
from ring_async.verifiers.sandbox.judge import CodeJudge
from ring_async.verifiers.tests_format import LANGS, TestsSpec, parse_tests

REWARD_TYPES = ("math", "code", "external")
LATENCY_WINDOW = 10_000  # latencies kept per reward type for the percentiles
RECENT_WORK = 60_000  # (finished at, seconds) kept for work_latency: a minute at 1,000 rollouts/s
MAX_EARLY_REWARDS = 100_000

ExternalResult = Callable[["ScoredRollout"], None]
# What an external reward model answers for one rollout: its reward (None: it could not score it) and details.
_Answer = tuple[float | None, dict[str, Any]]


@dataclass(frozen=True)
class RolloutToScore:
    """One rollout as the verifier needs it (a row of the broker's Arrow batch, minus the tokens)."""

    rollout_id: str
    reward_type: str
    response: str
    answer: str | None = None  # math: the gold answer
    tests: TestsSpec | Mapping[str, Any] | str | None = None  # code: the tests (object, JSON text or parsed)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    finish_reason: str = "stop"  # "abort": the generator stopped it unfinished, and it is masked unscored


def _awaits_reward(rollout: RolloutToScore) -> bool:
    """An external rollout a reward model will score (one the generator stopped unfinished is masked at once)."""
    return rollout.reward_type == "external" and rollout.finish_reason != "abort"


@dataclass
class ScoredRollout:
    rollout_id: str
    reward_type: str
    verdict: str
    reward: float | None  # None: masked from training
    details: dict[str, Any]
    latency_s: float

    @property
    def masked(self) -> bool:
        return self.reward is None

    def to_json(self) -> dict[str, Any]:
        return {"rollout_id": self.rollout_id, "reward_type": self.reward_type, "verdict": self.verdict,
                "reward": self.reward, "masked": self.masked, "latency_s": self.latency_s, "details": self.details}


class VerifierCore:
    def __init__(self, *, math_checker: MathChecker | None = None, code_judge: CodeJudge | None = None,
                 code_concurrency: int | None = None, math_in_flight_per_worker: int = 4,
                 external_timeout_s: float = 600.0, max_pending: int = 4096,
                 max_awaiting_external: int = 8192) -> None:
        self._math = math_checker
        self._code = code_judge
        self._own = {"math": math_checker is None, "code": code_judge is None}
        self._make_lock = threading.Lock()
        self.code_concurrency = code_concurrency or os.cpu_count() or 2
        self.math_in_flight_per_worker = math_in_flight_per_worker
        self.external_timeout_s = external_timeout_s
        self.max_pending = max_pending
        # Deferred external rollouts hold no admission slot (they would starve math and code for minutes), so they
        # get their own bound: each one is kept, with its row, until its reward comes.
        self.max_awaiting_external = max_awaiting_external
        self._deferred: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._waiting: dict[str, asyncio.Future[_Answer]] = {}
        self._early: collections.OrderedDict[str, _Answer] = collections.OrderedDict()
        self._external_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._verdicts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._latency: dict[str, collections.deque[float]] = {
            kind: collections.deque(maxlen=LATENCY_WINDOW) for kind in REWARD_TYPES}
        self._recent_work: collections.deque[tuple[float, float]] = collections.deque(maxlen=RECENT_WORK)
        self.in_flight = 0
        self._received = 0  # math/code rollouts inside score(), queued or running
        self.running = 0  # math/code rollouts holding a math or sandbox slot
        self.closed = False

    # -- scoring ----------------------------------------------------------------------------------------------------

    async def score(self, rollouts: Sequence[RolloutToScore], *,
                    on_external: ExternalResult | None = None) -> list[ScoredRollout]:
        """Score a batch; results come back in the batch's order. Raises VerifierError (nothing scored) when any
        record is invalid.

        With ``on_external``, external rollouts are not awaited: each is registered for ``submit_reward`` before this
        returns and comes back as ``pending_external`` (reward None); ``on_external`` is called on the event loop
        with its result (``scored``, or ``unverifiable`` after ``external_timeout_s``). An id that is already waiting
        is reported pending again rather than refused, so a client retrying a batch whose reply it lost succeeds; if
        this call fails or is cancelled, the rollouts it registered are withdrawn (nobody was told they wait)."""
        if self.closed:
            raise VerifierClosedError("the verifier is closed")
        prepared = [self._validate(index, rollout) for index, rollout in enumerate(rollouts)]
        ids = [r.rollout_id for r in rollouts if r.reward_type == "external"]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if on_external is None:
            duplicates |= {i for i in ids if i in self._waiting}
        if duplicates:
            raise VerifierError(
                f"external rollout id(s) repeated in the batch or already waiting for a reward: "
                f"{', '.join(sorted(duplicates)[:5])}")
        self._bind_loop()
        if on_external is None:
            return list(await asyncio.gather(*(self._score_one(rollout, extra) for rollout, extra in prepared)))
        deferred = self._defer_external([r for r, _ in prepared if _awaits_reward(r)], on_external)
        try:
            scored = iter(await asyncio.gather(
                *(self._score_one(rollout, extra) for rollout, extra in prepared if not _awaits_reward(rollout))))
        except BaseException:
            self._withdraw(deferred)
            raise
        return [_pending(rollout) if _awaits_reward(rollout) else next(scored) for rollout, _ in prepared]

    def _validate(self, index: int, rollout: RolloutToScore) -> tuple[RolloutToScore, Any]:
        where = f"rollouts[{index}] ({rollout.rollout_id!r})"
        if not isinstance(rollout.rollout_id, str) or not rollout.rollout_id:
            raise VerifierError(f"rollouts[{index}].rollout_id: must be a non-empty string")
        if rollout.reward_type not in REWARD_TYPES:
            raise VerifierError(f"{where}.reward_type: must be one of {', '.join(REWARD_TYPES)}, "
                                f"got {rollout.reward_type!r}")
        if not isinstance(rollout.response, str):
            raise VerifierError(f"{where}.response: must be a string")
        if rollout.reward_type == "math":
            if not isinstance(rollout.answer, str):
                raise VerifierError(f"{where}.answer: a math rollout needs its gold answer (a string)")
            return rollout, None
        if rollout.reward_type == "code":
            if rollout.tests is None:
                raise VerifierError(f"{where}.tests: a code rollout needs its tests")
            tests = rollout.tests if isinstance(rollout.tests, TestsSpec) else parse_tests(
                rollout.tests, where=f"{where}.tests")
            lang = rollout.metadata.get("lang") or tests.lang or "python"
            if lang not in LANGS:
                raise VerifierError(f"{where}.metadata.lang: must be one of {', '.join(LANGS)}, got {lang!r}")
            if lang == "cpp" and tests.mode != "stdio":
                raise VerifierError(f"{where}: C++ programs are judged in stdio mode only")
            return rollout, (tests, lang)
        return rollout, None

    async def _score_one(self, rollout: RolloutToScore, extra: Any) -> ScoredRollout:
        if rollout.finish_reason == "abort":
            # An unfinished response has no answer to judge: scoring it 0 would teach the policy that long answers
            # are wrong, when the generator only stopped them (a stale sample, or a prompt it could not serve).
            self._verdicts[(rollout.reward_type, V.UNVERIFIABLE)] += 1
            return ScoredRollout(rollout.rollout_id, rollout.reward_type, V.UNVERIFIABLE, None,
                                 {"reason": "the generator stopped this response before it finished"}, 0.0)
        worked = rollout.reward_type != "external"  # an external wait queues for no worker
        self._received += int(worked)
        try:
            async with self._semaphore("admission", self.max_pending):
                self.in_flight += 1
                started = time.perf_counter()
                try:
                    if rollout.reward_type == "math":
                        verdict, reward, details = await self._score_math(rollout)
                    elif rollout.reward_type == "code":
                        verdict, reward, details = await self._score_code(rollout, *extra)
                    else:
                        verdict, reward, details = await self._await_external(
                            rollout.rollout_id, self._register_external(rollout.rollout_id))
                finally:
                    self.in_flight -= 1
                latency = time.perf_counter() - started
        finally:
            self._received -= int(worked)
        self._verdicts[(rollout.reward_type, verdict)] += 1
        if rollout.reward_type != "external":  # an external wait measures the reward model, not us
            self._latency[rollout.reward_type].append(latency)
        return ScoredRollout(rollout.rollout_id, rollout.reward_type, verdict, reward, details, round(latency, 6))

    async def _score_math(self, rollout: RolloutToScore) -> tuple[str, float | None, dict[str, Any]]:
        checker = self.math_checker()
        async with self._slot("math", max(1, checker.pool.size * self.math_in_flight_per_worker)):
            result = await checker.acheck(rollout.answer or "", rollout.response)
        return result.verdict, result.reward, result.details

    async def _score_code(self, rollout: RolloutToScore, tests: TestsSpec,
                          lang: str) -> tuple[str, float | None, dict[str, Any]]:
        program, reason = extract_program(rollout.response, lang)
        if program is None:
            return V.COMPILE_ERROR, 0.0, {"reason": reason, "lang": lang}
        judge = self.code_judge()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.code_concurrency, thread_name_prefix="code-judge")
        async with self._slot("code", self.code_concurrency):
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, judge.judge, program, tests, lang)
        return result.verdict, result.reward, result.details

    def _register_external(self, rollout_id: str) -> asyncio.Future[_Answer]:
        """The future ``submit_reward`` resolves for ``rollout_id`` (already resolved when the reward came first)."""
        future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        with self._external_lock:
            early = self._early.pop(rollout_id, None)
            if early is None:
                self._waiting[rollout_id] = future
        if early is not None:
            reward, details = early
            future.set_result((reward, {**details, "arrived": "before the rollout"}))
        return future

    async def _await_external(self, rollout_id: str, future: asyncio.Future[_Answer]
                              ) -> tuple[str, float | None, dict[str, Any]]:
        try:
            reward, details = await asyncio.wait_for(future, self.external_timeout_s)
        except asyncio.TimeoutError:
            return V.UNVERIFIABLE, None, {"reason": "external_timeout", "timeout_s": self.external_timeout_s}
        finally:
            with self._external_lock:
                if self._waiting.get(rollout_id) is future:
                    del self._waiting[rollout_id]
        if reward is None:  # the reward model answered that it could not score the response: masked, not 0
            return V.UNVERIFIABLE, None, {**details, "reason": "external_unverifiable"}
        return V.SCORED, reward, details

    def _defer_external(self, rollouts: Sequence[RolloutToScore], on_external: ExternalResult) -> list[str]:
        """Register the external rollouts not already waiting, each decided in a background task; the ids
        registered. VerifierBusyError (nothing registered) past ``max_awaiting_external``."""
        with self._external_lock:
            new = [r for r in rollouts if r.rollout_id not in self._waiting]
            waiting = len(self._waiting)
        if waiting + len(new) > self.max_awaiting_external:
            advice = "split the batch" if len(new) > self.max_awaiting_external else "retry once rewards have come"
            raise VerifierBusyError(
                f"{waiting} external rollout(s) already waiting for a reward and this batch adds {len(new)}: at "
                f"most {self.max_awaiting_external} may wait (max_awaiting_external); {advice}")
        for rollout in new:
            # Registered now, not when the task first runs: a reward sent right after the reply must find it.
            future = self._register_external(rollout.rollout_id)
            task = asyncio.ensure_future(self._decide_external(rollout, future, on_external))
            self._deferred.add(task)
            task.add_done_callback(self._deferred.discard)
        return [r.rollout_id for r in new]

    async def _decide_external(self, rollout: RolloutToScore, future: asyncio.Future[_Answer],
                               on_external: ExternalResult) -> None:
        started = time.perf_counter()
        # Withdrawn, or the verifier closed: the CancelledError ends the task and nothing is reported.
        verdict, reward, details = await self._await_external(rollout.rollout_id, future)
        self._verdicts[(rollout.reward_type, verdict)] += 1
        on_external(ScoredRollout(rollout.rollout_id, rollout.reward_type, verdict, reward, details,
                                  round(time.perf_counter() - started, 6)))

    def _withdraw(self, rollout_ids: Sequence[str]) -> None:
        with self._external_lock:
            futures = [self._waiting.pop(i) for i in rollout_ids if i in self._waiting]
        for future in futures:
            future.cancel()

    # -- external rewards -------------------------------------------------------------------------------------------

    def submit_reward(self, rollout_id: str, reward: float | None,
                      details: Mapping[str, Any] | None = None) -> bool:
        """Deliver an external reward; safe from any thread. ``None`` says the reward model could not score the
        response (verdict ``unverifiable``, masked). True when a rollout was waiting for it; False when it is kept
        for a rollout that has not arrived yet. Raises VerifierError on a reward that is not a finite number."""
        if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float))
                                   or not math.isfinite(reward)):
            raise VerifierError(f"reward for {rollout_id!r} must be a finite number, got {reward!r}")
        value = (None if reward is None else float(reward), dict(details or {}))
        with self._external_lock:
            future = self._waiting.get(rollout_id)
            if future is None:
                self._early[rollout_id] = value
                self._early.move_to_end(rollout_id)
                while len(self._early) > MAX_EARLY_REWARDS:
                    self._early.popitem(last=False)
                return False
        loop = self._loop
        assert loop is not None  # a waiting future exists only after score() bound the loop
        loop.call_soon_threadsafe(_resolve, future, value)
        return True

    def awaiting_external(self) -> list[str]:
        """Rollout ids waiting for an external reward (what StreamRollouts shows a reward model)."""
        with self._external_lock:
            return list(self._waiting)

    # -- plumbing ---------------------------------------------------------------------------------------------------

    def math_checker(self) -> MathChecker:
        with self._make_lock:
            if self._math is None:
                self._math = MathChecker()
            return self._math

    def code_judge(self) -> CodeJudge:
        with self._make_lock:
            if self._code is None:
                self._code = CodeJudge(pool_size=self.code_concurrency + 2)
            return self._code

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._semaphores = {}  # asyncio primitives belong to one loop

    @contextlib.asynccontextmanager
    async def _slot(self, kind: str, size: int) -> AsyncIterator[None]:
        """One of ``size`` math or sandbox slots. The time inside is the rollout's work time (queueing excluded)."""
        async with self._semaphore(kind, size):
            self.running += 1
            started = time.perf_counter()
            try:
                yield
            finally:
                self.running -= 1
                self._recent_work.append((time.monotonic(), time.perf_counter() - started))

    @property
    def queued(self) -> int:
        """Math/code rollouts received and waiting for admission or for a math or sandbox slot."""
        return self._received - self.running

    def work_latency(self, window_s: float = 60.0) -> dict[str, float | None]:
        """Mean, median and 95th percentile of the seconds a math or sandbox slot was held per rollout, over the
        rollouts finished in the last ``window_s`` (at most the last RECENT_WORK of them); None when there were none.
        A code response without a program takes no slot and is not counted."""
        cutoff = time.monotonic() - window_s
        values = sorted(seconds for finished, seconds in self._recent_work if finished >= cutoff)
        mean = round(sum(values) / len(values), 6) if values else None
        return {"mean_s": mean, "p50_s": _percentile(values, 0.50), "p95_s": _percentile(values, 0.95)}

    def _semaphore(self, name: str, size: int) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(name)
        if semaphore is None:
            semaphore = self._semaphores[name] = asyncio.Semaphore(size)
        return semaphore

    def stats(self) -> dict[str, Any]:
        """Verdict counts by reward type, masked counts, latency percentiles (seconds from admission to verdict),
        work in flight and queued."""
        by_type: dict[str, Any] = {}
        for kind in REWARD_TYPES:
            verdicts = {v: n for (k, v), n in self._verdicts.items() if k == kind}
            latencies = sorted(self._latency[kind])
            by_type[kind] = {
                "verdicts": verdicts,
                "masked": sum(n for v, n in verdicts.items() if v in V.MASKED),
                "latency_p50_s": _percentile(latencies, 0.50),
                "latency_p99_s": _percentile(latencies, 0.99),
            }
        with self._external_lock:
            waiting, early = len(self._waiting), len(self._early)
        return {"by_type": by_type, "in_flight": self.in_flight, "queued": self.queued, "running": self.running,
                "waiting_external": waiting, "early_external_rewards": early}

    async def close(self) -> None:
        self.closed = True
        with self._external_lock:
            waiting = list(self._waiting.values())
        for future in waiting:
            future.cancel()
        if self._deferred:  # their futures are cancelled: let the tasks end rather than die pending with the loop
            await asyncio.gather(*self._deferred, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._code is not None and self._own["code"]:
            self._code.close()
        if self._math is not None and self._own["math"]:
            self._math.close()


def _pending(rollout: RolloutToScore) -> ScoredRollout:
    return ScoredRollout(rollout.rollout_id, rollout.reward_type, V.PENDING_EXTERNAL, None, {}, 0.0)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 6)
