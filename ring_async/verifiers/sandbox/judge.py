"""The code judge: one program, one tests file, one jail, one verdict.

Verdict rules (docs/verifiers.md):
- ``compile_error``: Python that does not compile, C++ that g++ rejects (or that takes too long to compile);
- per case, in order, the first failure decides: ``time_limit`` (CPU time over the limit, or the wall-clock cap),
  ``memory_limit``, ``output_limit``, ``runtime_error``, then ``wrong_answer`` from the host-side comparison;
- ``accepted`` only when every case passed *and* the harness sent the run's random completion token at the end;
- ``sandbox_error`` when the jail itself failed (did not start, harness error): retried once on a fresh jail, then
  reported with reward ``None`` (masked from training, never scored 0).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ring_async.verifiers import verdicts as V
from ring_async.verifiers.errors import VerifierError
from ring_async.verifiers.sandbox.compare import compare_stdout, equal_values
from ring_async.verifiers.sandbox.jail import Jail, JailClosed, JailDeadline, JailStartError
from ring_async.verifiers.sandbox.policy import HostSandbox, SandboxPolicy, probe
from ring_async.verifiers.sandbox.warm_pool import JailPool
from ring_async.verifiers.tests_format import LANGS, TestsSpec

HARNESS_STATUS = {"time_limit": V.TIME_LIMIT, "memory_limit": V.MEMORY_LIMIT, "output_limit": V.OUTPUT_LIMIT,
                  "runtime_error": V.RUNTIME_ERROR, "unserialisable": V.WRONG_ANSWER}
DEADLINE_SLACK_S = 5.0
SIGKILL = 9


@dataclass
class CodeResult:
    verdict: str
    reward: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reward": self.reward, **self.details}


class CodeJudge:
    """Thread-safe: call ``judge`` from as many threads as you want jails running at once."""

    def __init__(self, policy: SandboxPolicy | None = None, pool_size: int | None = None,
                 host: HostSandbox | None = None) -> None:
        self.policy = policy or SandboxPolicy()
        self.host = host or probe(self.policy)
        self._pool: JailPool | None = None
        self._pool_size = pool_size or (os.cpu_count() or 2) + 2
        self._lock = threading.Lock()
        self.teardown_failures = 0  # jails whose processes outlived the kill (never expected; watched by tests)
        # Teardown after the kill (reaping, emptying and removing the cgroup) happens off the caller's path: the
        # verdict is known once every process of the jail has been sent SIGKILL.
        self._reaper = ThreadPoolExecutor(1, thread_name_prefix="jail-reaper")
        self._teardowns: set[Future[None]] = set()

    def __enter__(self) -> CodeJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        self.wait_for_teardowns()
        self._reaper.shutdown(wait=True)

    def wait_for_teardowns(self, timeout: float = 30.0) -> None:
        """Block until every finished jail is reaped and its cgroup removed."""
        with self._lock:
            pending = list(self._teardowns)
        wait(pending, timeout=timeout)

    def _teardown(self, jail: Jail) -> None:
        facts = jail.destroy()
        if facts.get("bwrap_survived_kill") or facts.get("cgroup_emptied") is False:
            with self._lock:
                self.teardown_failures += 1

    def warm_up(self) -> None:
        """Start the jail pool now rather than on the first program."""
        if self.host.ok:
            self._get_pool()

    def pool_stats(self) -> dict[str, object]:
        stats = self._pool.stats() if self._pool else {}
        return {**stats, "teardown_failures": self.teardown_failures}

    def _get_pool(self) -> JailPool:
        with self._lock:
            if self._pool is None:
                self._pool = JailPool(self.host, self.policy, self._pool_size)
            return self._pool

    # -- judging ----------------------------------------------------------------------------------------------------

    def judge(self, source: str, tests: TestsSpec, lang: str = "python") -> CodeResult:
        if lang not in LANGS:
            raise VerifierError(f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
        if lang == "cpp" and tests.mode != "stdio":
            raise VerifierError("C++ programs are judged in stdio mode only")
        if len(source.encode("utf-8", "replace")) > self.policy.max_source_bytes:
            return CodeResult(V.COMPILE_ERROR, 0.0, {"reason": f"source over {self.policy.max_source_bytes} bytes"})
        started = time.monotonic()
        attempts = 0
        result = CodeResult(V.SANDBOX_ERROR, None)
        while attempts < 2:  # a sandbox failure is retried once on a fresh jail, then masked
            attempts += 1
            result = self._judge_once(source, tests, lang)
            if result.verdict != V.SANDBOX_ERROR:
                break
        result.reward = V.binary_reward(result.verdict)
        result.details.update(lang=lang, mode=tests.mode, attempts=attempts,
                              seconds=round(time.monotonic() - started, 4), protections=self.host.protections())
        return result

    def _judge_once(self, source: str, tests: TestsSpec, lang: str) -> CodeResult:
        if not self.host.ok:
            return CodeResult(V.SANDBOX_ERROR, None, {"reason": self.host.reason})
        if lang == "cpp" and self.host.gxx is None:
            return CodeResult(V.SANDBOX_ERROR, None, {"reason": "g++ is not installed"})
        try:
            jail = self._get_pool().acquire(self.policy.jail_start_timeout_s)
        except JailStartError as err:
            return CodeResult(V.SANDBOX_ERROR, None, {"reason": str(err)})
        job, deadline_s = self._job(source, tests, lang)
        try:
            if jail.cgroup is not None:
                jail.cgroup.set_limits(*self._cgroup_limits(job, lang))
            return self._run(jail, job, tests, time.monotonic() + deadline_s)
        except (JailStartError, OSError) as err:
            return CodeResult(V.SANDBOX_ERROR, None, {"reason": f"jail failed: {err}"})
        finally:
            jail.kill()
            future = self._reaper.submit(self._teardown, jail)
            with self._lock:
                self._teardowns.add(future)
            future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._teardowns.discard(future)

    def _job(self, source: str, tests: TestsSpec, lang: str) -> tuple[dict[str, Any], float]:
        policy = self.policy
        time_limit = min(tests.time_limit_s or policy.time_limit_s, policy.max_time_limit_s)
        memory_mb = min(tests.memory_limit_mb or policy.memory_limit_mb, policy.max_memory_limit_mb)
        wall = time_limit * policy.wall_factor + policy.wall_extra_s
        job: dict[str, Any] = {
            "lang": lang, "mode": tests.mode, "source": source, "entry": tests.entry,
            "cases": tests.inputs(),
            "time_limit_s": float(time_limit), "wall_limit_s": float(wall), "memory_limit_bytes": memory_mb << 20,
            "output_limit_bytes": policy.output_limit_bytes, "file_size_bytes": policy.file_size_bytes,
            "max_processes": policy.max_processes, "max_open_files": policy.max_open_files,
        }
        deadline = len(tests.cases) * (wall + 0.5) + DEADLINE_SLACK_S
        if lang == "cpp":
            compile_wall = policy.compile_time_limit_s * policy.wall_factor + policy.wall_extra_s
            job.update(
                stack_bytes=memory_mb << 20,
                compile_time_limit_s=float(policy.compile_time_limit_s), compile_wall_limit_s=float(compile_wall),
                compile_memory_limit_bytes=policy.compile_memory_mb << 20,
                compile_argv=[self.host.gxx, *policy.cxx_flags, "-o", "/tmp/build/solution",
                              "/tmp/build/solution.cpp"],
            )
            deadline += compile_wall
        return job, deadline

    def _cgroup_limits(self, job: dict[str, Any], lang: str) -> tuple[int, int, float]:
        policy = self.policy
        memory = max(job["memory_limit_bytes"], job.get("compile_memory_limit_bytes", 0))
        memory += 2 * policy.tmpfs_bytes + (policy.harness_memory_mb << 20)
        # +4: the bubblewrap monitor, the harness, the case's own process and one spare.
        return policy.max_processes + 4, memory, policy.cpus_per_jail

    def _run(self, jail: Jail, job: dict[str, Any], tests: TestsSpec, deadline: float) -> CodeResult:
        token = secrets.token_hex(16)
        max_bytes = (len(tests.cases) + 2) * (2 * self.policy.output_limit_bytes + 64 * 1024)
        cases: list[dict[str, Any]] = []
        compiled = False
        try:
            jail.send(job)
            jail.send({"token": token})
            for frame in jail.frames(deadline, max_bytes):
                event = frame.get("event")
                if event == "harness_error":
                    return CodeResult(V.SANDBOX_ERROR, None, {"reason": f"harness: {frame.get('error')}"})
                if event == "compile":
                    compiled = True
                    if not frame.get("ok"):
                        return CodeResult(V.COMPILE_ERROR, 0.0, {
                            "reason": frame.get("reason") or "compilation failed",
                            "compiler_output": str(frame.get("stderr", ""))[-2000:]})
                    continue
                if event == "case":
                    if frame.get("index") != len(cases):
                        return CodeResult(V.RUNTIME_ERROR, 0.0, {"reason": "harness frames out of order"})
                    failure = self._check_case(frame, tests, jail)
                    cases.append(_case_summary(frame, failure))
                    if failure is not None:
                        verdict, reason = failure
                        return CodeResult(verdict, 0.0, _failure_details(frame, reason, cases, len(tests.cases)))
                    continue
                if event == "done":
                    if frame.get("token") != token:
                        return CodeResult(V.RUNTIME_ERROR, 0.0, {"reason": "completion token mismatch"})
                    if len(cases) != len(tests.cases):
                        return CodeResult(V.RUNTIME_ERROR, 0.0, {"reason": "not every case ran"})
                    return CodeResult(V.ACCEPTED, 1.0, {"tests_total": len(tests.cases),
                                                        "tests_passed": len(cases), "cases": cases})
        except JailDeadline:
            if not compiled:
                if job["lang"] == "cpp":
                    return CodeResult(V.COMPILE_ERROR, 0.0, {"reason": "compilation ran past the deadline"})
                return CodeResult(V.SANDBOX_ERROR, None, {"reason": "the harness did not start the job in time"})
            return CodeResult(V.TIME_LIMIT, 0.0, {"reason": "the job ran past its overall deadline", "cases": cases})
        except (JailClosed, ValueError) as err:
            if not compiled:
                return CodeResult(V.SANDBOX_ERROR, None, {"reason": f"harness channel: {err}"})
            return CodeResult(V.RUNTIME_ERROR, 0.0, {"reason": f"harness channel: {err}", "cases": cases})
        # The channel closed before "done".
        if not compiled:
            return CodeResult(V.SANDBOX_ERROR, None, {"reason": "the jail ended before compiling"})
        if jail.oom_kills():
            return CodeResult(V.MEMORY_LIMIT, 0.0, {"reason": "the jail ran out of memory", "cases": cases})
        return CodeResult(V.RUNTIME_ERROR, 0.0, {"reason": "the jail ended before all cases ran", "cases": cases})

    def _check_case(self, frame: dict[str, Any], tests: TestsSpec, jail: Jail) -> tuple[str, str] | None:
        status = frame.get("status")
        if status != "ok":
            verdict = HARNESS_STATUS.get(str(status), V.RUNTIME_ERROR)
            if verdict == V.RUNTIME_ERROR and frame.get("signal") == SIGKILL and jail.oom_kills():
                return V.MEMORY_LIMIT, "killed by the kernel for going over the jail's memory limit"
            return verdict, str(frame.get("reason") or status)
        _inputs, expected = tests.cases[frame["index"]]
        if tests.mode == "stdio":
            ok, why = compare_stdout(str(frame.get("stdout", "")).encode("latin-1"), expected, tests.float_tolerance)
            return None if ok else (V.WRONG_ANSWER, why)
        result_text = frame.get("result")
        if not isinstance(result_text, str):
            return V.WRONG_ANSWER, "no result"
        try:
            result = json.loads(result_text)
        except ValueError:
            return V.WRONG_ANSWER, "the result is not JSON data"
        if equal_values(result, expected, tests.float_tolerance):
            return None
        return V.WRONG_ANSWER, f"expected {_short(expected)}, got {_short(result)}"


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _case_summary(frame: dict[str, Any], failure: tuple[str, str] | None) -> dict[str, Any]:
    return {"index": frame.get("index"), "verdict": failure[0] if failure else "passed",
            "cpu_s": frame.get("cpu_s"), "wall_s": frame.get("wall_s")}


def _failure_details(frame: dict[str, Any], reason: str, cases: list[dict[str, Any]], total: int) -> dict[str, Any]:
    return {
        "reason": reason,
        "tests_total": total,
        "tests_passed": len(cases) - 1,
        "failed_case": frame.get("index"),
        "exit_code": frame.get("exit_code"),
        "signal": frame.get("signal"),
        "error": frame.get("error"),
        "message": frame.get("message") or None,
        "stdout_head": str(frame.get("stdout", ""))[:200],
        "stderr_tail": str(frame.get("stderr", ""))[-500:],
        "cases": cases,
    }
