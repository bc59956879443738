"""``ring-async bench NAME [ARGS]``: run a benchmark from the repository's ``bench/`` folder (JSON on stdout)."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from ring_async.errors import RingAsyncError

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def available() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_")) if BENCH_DIR.is_dir() else []


def _run(args: argparse.Namespace) -> int:
    script = BENCH_DIR / f"{args.name}.py"
    if not script.is_file():
        names = ", ".join(available()) or f"none: {BENCH_DIR} is missing (benchmarks run from a source checkout)"
        raise RingAsyncError(f"no benchmark {args.name!r}; available: {names}")
    module = runpy.run_path(str(script), run_name="ring_async_bench")
    sys.argv = [f"ring-async bench {args.name}", *args.args]
    return int(module["main"](list(args.args)) or 0)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark from bench/ and print JSON")
    parser.add_argument("name", help="benchmark name, e.g. broker")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark (e.g. --json)")
    parser.set_defaults(func=_run)
