"""Reward verifiers: math checks per second and code-sandbox programs per second, with latency percentiles.

Math: a realistic answer mix for RL on math data sets: groups of K=16 responses per prompt (a few KB of reasoning
each, ending in a box), golds that are mostly integers, then fractions, decimals and LaTeX expressions (roots, pi,
intervals, sets, polynomials, equations). Responses are right in the gold's form, right in another form, wrong,
hedged, unboxed or truncated, in proportions set below. Checks are submitted concurrently (bounded) to a checker
with one worker per core. Reported twice: as deployed (fast path + verdict cache, which K responses sharing answers
hit) and with the cache off (every non-fast check goes to a worker).

Sandbox: a typical competitive-programming Python program (reads its input, sorts, sums, prints) with 10 stdio
tests, judged with ``concurrency`` programs at once on a warm jail pool. Latency is one ``judge`` call.

Targets (docs/benchmarks.md), 2 cores: >= 1,000 math checks/s; >= 40 Python programs/s with p50 <= 150 ms.

    ring-async bench verifiers --json          # or: python bench/verifiers.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

GROUP_SIZE = 16
# (share of groups, gold, equivalent forms of the gold, plausible wrong answers)
EXPRESSIONS = [
    (r"\frac{\sqrt{3}}{2}", [r"\frac{\sqrt3}{2}", r"\frac{1}{2}\sqrt{3}"], [r"\frac{\sqrt{2}}{2}", r"\sqrt{3}"]),
    (r"2\sqrt{5}", [r"\sqrt{20}"], [r"4\sqrt{5}", r"\sqrt{5}"]),
    (r"\frac{\pi}{4}", [r"\pi/4"], [r"\frac{\pi}{2}", r"\pi"]),
    ("(1,3)", ["(1, 3)"], ["[1,3]", "(1,4)"]),
    (r"[2,5)", [r"[2, 5)"], ["[2,5]", "(2,5)"]),
    (r"\{1,2,3\}", [r"\{3,2,1\}"], [r"\{1,2\}"]),
    ("x^2+2x+1", ["(x+1)^2"], ["x^2+1", "(x-1)^2"]),
    ("y=3x-2", ["3x-2"], ["y=3x+2"]),
    (r"e^{2}", ["e^2"], ["e", "2e"]),
    (r"\frac{5}{12}", [r"\dfrac{5}{12}"], [r"\frac{7}{12}"]),
    (r"50\%", ["50", "0.5"], ["25", r"40\%"]),
    (r"5\text{ cm}", ["5"], ["6"]),
]
REASONING = ("Let us compute step by step. We have {a} + {b} = {c}, and multiplying by {d} gives {e}. "
             "Checking the constraint again, the value is consistent with the earlier bound. ")


def _gold(rng: random.Random) -> tuple[str, list[str], list[str]]:
    kind = rng.random()
    if kind < 0.60:
        n = rng.randint(-50, 5000)
        return str(n), [f"{n:,}" if abs(n) >= 1000 else f"{n}.0"], [str(n + rng.choice((-2, -1, 1, 3, 10)))]
    if kind < 0.70:
        p, q = rng.randint(1, 40), rng.randint(2, 40)
        return rf"\frac{{{p}}}{{{q}}}", [f"{p}/{q}"], [rf"\frac{{{p + 1}}}{{{q}}}", f"{p}/{q + 1}"]
    if kind < 0.75:
        value = rng.randint(1, 999) / 4
        return f"{value}", [f"{value:.2f}"], [f"{value + 0.5}"]
    return rng.choice(EXPRESSIONS)


def _response(rng: random.Random, answer_text: str) -> str:
    body = "".join(REASONING.format(a=rng.randint(1, 99), b=rng.randint(1, 99), c=rng.randint(1, 200),
                                    d=rng.randint(2, 9), e=rng.randint(1, 2000)) for _ in range(rng.randint(10, 40)))
    return f"<think>{body}</think>\n{body[:400]}\nTherefore the final answer is {answer_text}"


def math_workload(groups: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    checks = []
    for _ in range(groups):
        gold, same, wrong = _gold(rng)
        # A policy mid-training: a few distinct answers per group, each given by several of the K responses.
        answers = [rng.choice([gold] * 3 + same + wrong * 2) for _ in range(3)]
        for _ in range(GROUP_SIZE):
            roll = rng.random()
            answer = rng.choice(answers)
            if roll < 0.88:
                text = rf"\boxed{{{answer}}}."
            elif roll < 0.93:
                text = rf"\boxed{{{answer}}} or maybe \boxed{{{rng.choice(wrong)}}}."  # hedging
            elif roll < 0.97:
                text = f"{answer}."  # forgot the box
            else:
                text = rf"\boxed{{{answer}"  # truncated
            checks.append((gold, _response(rng, text)))
    return checks


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.50) * 1000, 3), "p99_ms": round(pick(0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3)}


def bench_math(checks: list[tuple[str, str]], workers: int, cache: bool, in_flight: int) -> dict:
    from ring_async.verifiers.math_checker import MathChecker

    with MathChecker(workers=workers, cache_size=65_536 if cache else 0) as checker:
        started = time.perf_counter()
        report = checker.load_golds(sorted({gold for gold, _ in checks}))
        load_s = time.perf_counter() - started
        latencies: list[float] = []
        verdicts: Counter[str] = Counter()
        paths: Counter[str] = Counter()
        slots = threading.Semaphore(in_flight)
        done = threading.Event()
        remaining = [len(checks)]
        lock = threading.Lock()

        def finished(future, submitted):  # type: ignore[no-untyped-def]
            result = future.result()
            with lock:
                latencies.append(time.perf_counter() - submitted)
                verdicts[result.verdict] += 1
                paths[result.details["path"]] += 1
                remaining[0] -= 1
                if not remaining[0]:
                    done.set()
            slots.release()

        started = time.perf_counter()
        for gold, response in checks:
            slots.acquire()
            submitted = time.perf_counter()
            checker.check_async(gold, response).add_done_callback(lambda f, s=submitted: finished(f, s))
        done.wait()
        elapsed = time.perf_counter() - started
    return {
        "checks": len(checks), "workers": workers, "verdict_cache": cache, "seconds": round(elapsed, 3),
        "checks_per_s": round(len(checks) / elapsed, 1), **_percentiles(latencies),
        "verdicts": dict(verdicts), "decided_by": dict(paths),
        "golds": report.total, "gold_load_s": round(load_s, 3), "golds_unparseable": len(report.unparseable),
    }


TYPICAL_PROGRAM = """import sys

def main():
    data = sys.stdin.read().split()
    n = int(data[0])
    values = sorted(int(x) for x in data[1:1 + n])
    best = max(values[i + 1] - values[i] for i in range(n - 1)) if n > 1 else 0
    print(sum(values), best)

main()
"""


def typical_tests(rng: random.Random):  # type: ignore[no-untyped-def]
    from ring_async.verifiers.tests_format import parse_tests

    cases = []
    for _ in range(10):
        values = [rng.randint(-1000, 1000) for _ in range(rng.randint(1, 200))]
        ordered = sorted(values)
        best = max(ordered[i + 1] - ordered[i] for i in range(len(values) - 1)) if len(values) > 1 else 0
        cases.append({"input": f"{len(values)}\n{' '.join(map(str, values))}\n", "output": f"{sum(values)} {best}\n"})
    return parse_tests({"mode": "stdio", "cases": cases, "time_limit_s": 2})


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent outside idle and iowait since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class _TreeCpu:
    """CPU seconds of this process and of everything it starts (the judge's threads, setpriv, bubblewrap, the
    jails and their cases), from a cgroup v1 cpuacct group of its own. Unlike the machine's busy time it leaves out
    other work on a shared machine (and kernel threads). Only where a cpuacct hierarchy that carries none of the
    sandbox's controllers is writable (root); ``seconds()`` is None elsewhere."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.home = ""

    def __enter__(self) -> _TreeCpu:
        try:
            with open("/proc/self/mountinfo") as f:
                mounts = [line.split(" - ") for line in f]
            mount = next(left.split()[4] for left, right in mounts if right.split()[0] == "cgroup"
                         and "cpuacct" in right.split()[2].split(",")
                         and not {"cpu", "memory", "pids"} & set(right.split()[2].split(",")))
            with open("/proc/self/cgroup") as f:
                own = next(line.rstrip("\n").split(":", 2)[2] for line in f
                           if "cpuacct" in line.split(":")[1].split(","))
            self.home = (mount + own).rstrip("/")
            path = f"{self.home}/ring-async-bench-{os.getpid()}"
            os.mkdir(path)
            try:
                with open(f"{path}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))  # the whole process; everything it starts from now on follows
            except OSError:
                os.rmdir(path)
                raise
            self.path = path
        except (OSError, StopIteration, IndexError):
            self.path = None
        return self

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        with open(f"{self.path}/cpuacct.usage") as f:
            return int(f.read()) / 1e9

    def __exit__(self, *exc: object) -> None:
        if self.path is None:
            return
        try:
            with open(f"{self.home}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            return
        for _ in range(100):  # processes of ours that were killed may still be exiting
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.01)


def bench_sandbox(programs: int, concurrency: int, seed: int) -> dict:
    with _TreeCpu() as tree:
        return _bench_sandbox(programs, concurrency, seed, tree)


def _bench_sandbox(programs: int, concurrency: int, seed: int, tree: _TreeCpu) -> dict:
    from ring_async.verifiers.sandbox import CodeJudge

    rng = random.Random(seed)
    suites = [typical_tests(rng) for _ in range(programs)]
    with CodeJudge(pool_size=2 * concurrency + 1) as judge:
        judge.warm_up()
        for suite in suites[:concurrency]:  # pool warm and every code path loaded
            judge.judge(TYPICAL_PROGRAM, suite)
        latencies: list[float] = []
        verdicts: Counter[str] = Counter()

        def one(suite):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            verdict = judge.judge(TYPICAL_PROGRAM, suite).verdict
            return verdict, time.perf_counter() - start

        busy_before = _machine_busy_s()
        own_before = tree.seconds()
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for verdict, latency in pool.map(one, suites):
                verdicts[verdict] += 1
                latencies.append(latency)
        elapsed = time.perf_counter() - started
        busy = _machine_busy_s() - busy_before
        own_after = tree.seconds()
        judge.wait_for_teardowns()
        protections = judge.host.protections()
    return {
        "programs": programs, "tests_per_program": 10, "concurrency": concurrency, "seconds": round(elapsed, 3),
        "programs_per_s": round(programs / elapsed, 1), **_percentiles(latencies), "verdicts": dict(verdicts),
        # Whole-machine CPU while judging (every process, ours and anyone else's): bounds our cost per program.
        "machine_busy_cores": round(busy / elapsed, 2),
        "machine_cpu_ms_per_program": round(busy / programs * 1000, 1),
        # CPU of the sandbox's own processes only (this process and all it started), where measurable: the number to
        # compare on a shared machine, where the machine's busy time is mostly 2 cores x the run's length.
        "own_cpu_ms_per_program": None if own_before is None or own_after is None else
        round((own_after - own_before) / programs * 1000, 1),
        "protections": {k: protections[k] for k in ("seccomp", "cgroups", "host_uid", "tmpfs_size_cap")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output anyway)")
    parser.add_argument("--groups", type=int, default=500, help="math prompts (x16 responses each)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="math worker processes")
    parser.add_argument("--in-flight", type=int, default=64, help="math checks submitted and not yet answered")
    parser.add_argument("--programs", type=int, default=300, help="Python programs to judge")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2, help="programs judged at once")
    parser.add_argument("--skip-math", action="store_true")
    parser.add_argument("--skip-code", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import ring_async

    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "processor": platform.processor() or platform.machine()},
                    "code": os.path.dirname(os.path.dirname(os.path.abspath(ring_async.__file__)))}
    if not args.skip_math:
        checks = math_workload(args.groups, args.seed)
        report["math"] = bench_math(checks, args.workers, cache=True, in_flight=args.in_flight)
        report["math_no_cache"] = bench_math(checks, args.workers, cache=False, in_flight=args.in_flight)
    if not args.skip_code:
        report["sandbox"] = bench_sandbox(args.programs, args.concurrency, args.seed)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    # Run as a script, measure the checkout this file is in: an editable install of ring-async elsewhere (a main
    # checkout, while this one is a worktree) would otherwise be imported instead, and measured under this name.
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
