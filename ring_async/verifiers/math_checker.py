"""The math checker: front end (math_answer), pre-screen, fast path, verdict cache, then the worker pool.

Verdicts (docs/verifiers.md): ``correct`` (reward 1), ``incorrect`` (reward 0: no final answer, hedging, an answer
that does not parse or does not match), ``unverifiable`` (reward None, masked: the gold does not parse, the check
timed out, crashed or would explode). Every check returns its verdict with the path that decided it.

Golds: ``load_golds`` parses a data set's answers once (in the workers, in parallel) and reports those that do not
parse; a gold seen for the first time in ``check`` is parsed then, and kept.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Iterable

from ring_async.verifiers import verdicts as V
from ring_async.verifiers.math_answer import (
    DEFAULT_MAX_ANSWER_CHARS, FastNumber, extract_answer, fast_number, fast_verdict, normalise,
)
from ring_async.verifiers.math_pool import MathPool
from ring_async.verifiers.math_prescreen import explosive


@dataclass
class MathResult:
    verdict: str
    reward: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reward": self.reward, **self.details}


@dataclass
class GoldInfo:
    text: str
    fast: FastNumber | None = None
    blob: bytes | None = None  # pickled Math-Verify parse
    error: str = ""  # why the gold cannot be used ("" when it can)


@dataclass
class GoldReport:
    total: int
    parsed: int
    unparseable: list[tuple[int, str, str]]  # (index in the data set, gold, reason)

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "parsed": self.parsed,
                "unparseable": [{"index": i, "gold": g, "reason": r} for i, g, r in self.unparseable]}


class MathChecker:
    def __init__(self, pool: MathPool | None = None, *, workers: int | None = None, deadline_s: float = 1.5,
                 max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS, prescreen: bool = True,
                 cache_size: int = 65_536) -> None:
        self._own_pool = pool is None
        self.pool = pool or MathPool(workers=workers, deadline_s=deadline_s, soft_deadline_s=deadline_s * 2 / 3)
        self.max_answer_chars = max_answer_chars
        self.prescreen = prescreen
        self.cache_size = cache_size
        self._golds: dict[str, GoldInfo] = {}
        self._cache: collections.OrderedDict[tuple[str, str], tuple[str, str]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.counters: collections.Counter[str] = collections.Counter()

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()

    def __enter__(self) -> MathChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- golds ------------------------------------------------------------------------------------------------------

    def load_golds(self, golds: Iterable[str]) -> GoldReport:
        """Parse every distinct gold once (in parallel, in the workers); report the ones that cannot be used."""
        golds = list(golds)
        pending: dict[str, Future[tuple[Any, ...]]] = {}
        for gold in dict.fromkeys(golds):
            info = self._gold_info(gold)
            if info.error or gold in pending or info.blob is not None:
                continue
            pending[gold] = self.pool.submit(("parse_gold", gold))
        for gold, future in pending.items():
            reply = future.result()
            with self._lock:
                info = self._golds[gold]
                if reply[0] == "ok":
                    info.blob = reply[1]
                elif info.fast is None:
                    info.error = f"gold_unparseable: {reply[1]}"
        failed = [(i, g, self._golds[g].error) for i, g in enumerate(golds) if self._golds[g].error]
        return GoldReport(len(golds), len(golds) - len(failed), failed)

    def _gold_info(self, gold: str) -> GoldInfo:
        with self._lock:
            info = self._golds.get(gold)
            if info is None:
                info = GoldInfo(gold, fast=fast_number(gold))
                if not gold.strip():
                    info.error = "gold_empty"
                elif self.prescreen and (why := explosive(gold)):
                    info.error = f"gold_explosive: {why}"
                self._golds[gold] = info
            return info

    # -- checks -----------------------------------------------------------------------------------------------------

    def check(self, gold: str, response: str) -> MathResult:
        return self.check_async(gold, response).result()

    async def acheck(self, gold: str, response: str) -> MathResult:
        return await asyncio.wrap_future(self.check_async(gold, response))

    def check_async(self, gold: str, response: str) -> Future[MathResult]:
        """Decide locally when the front end, the pre-screen, the fast path or the cache can; otherwise ask a worker.
        Never blocks on a worker (the pool's queue bound aside)."""
        started = time.perf_counter()
        out: Future[MathResult] = Future()
        local = self._decide_locally(gold, response, started)
        if isinstance(local, MathResult):
            out.set_result(local)
            return out
        answer, info = local
        reply = self.pool.submit(("check", gold, info.blob, answer))

        def finish(done: Future[tuple[Any, ...]]) -> None:
            try:
                out.set_result(self._finish(info, answer, done.result(), started))
            except BaseException as err:  # never leave the caller waiting
                out.set_exception(err)

        reply.add_done_callback(finish)
        return out

    def _result(self, verdict: str, path: str, started: float, **details: Any) -> MathResult:
        with self._lock:
            self.counters[verdict] += 1
            self.counters[f"path_{path}"] += 1
        return MathResult(verdict, V.binary_reward(verdict),
                          {"path": path, "seconds": round(time.perf_counter() - started, 6), **details})

    def _decide_locally(self, gold: str, response: str, started: float) -> MathResult | tuple[str, GoldInfo]:
        info = self._gold_info(gold)
        if info.error:
            return self._result(V.UNVERIFIABLE, "gold", started, reason=info.error)
        extracted = extract_answer(response, self.max_answer_chars)
        if extracted.answer is None:
            return self._result(V.INCORRECT, "extraction", started, reason=extracted.reason, boxes=extracted.boxes)
        answer = extracted.answer
        if info.fast is not None and (number := fast_number(answer)) is not None:
            decided = fast_verdict(info.fast, number)
            if decided is not None:
                return self._result(V.CORRECT if decided else V.INCORRECT, "fast", started, answer=answer)
        if self.prescreen and (why := explosive(answer)):
            return self._result(V.UNVERIFIABLE, "prescreen", started, answer=answer, reason=f"explosive: {why}")
        key = (gold, normalise(answer))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is not None:
            verdict, reason = cached
            return self._result(verdict, "cache", started, answer=answer, **({"reason": reason} if reason else {}))
        return answer, info

    def _finish(self, info: GoldInfo, answer: str, reply: tuple[Any, ...], started: float) -> MathResult:
        verdict, reason = reply[0], reply[1]
        fresh_blob = reply[2] if len(reply) > 2 else None
        with self._lock:
            if fresh_blob is not None and info.blob is None:
                info.blob = fresh_blob
            if reason == "gold_unparseable" and info.fast is None:
                info.error = "gold_unparseable"
            if verdict in (V.CORRECT, V.INCORRECT):  # deterministic: worth remembering; timeouts are not
                key = (info.text, normalise(answer))
                self._cache[key] = (verdict, reason)
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        details: dict[str, Any] = {"answer": answer}
        if reason:
            details["reason"] = reason
        return self._result(verdict, "math_verify", started, **details)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counters, "golds": len(self._golds), "cache_entries": len(self._cache),
                    "pool": self.pool.stats()}
