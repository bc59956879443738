"""The tests file of a code task, validated with errors that name the offending field.

    {"mode": "stdio", "cases": [{"input": "1 2\\n", "output": "3\\n"}, ...]}
    {"mode": "function", "entry": "f", "cases": [{"args": [[1, 2]], "expected": 3}, ...]}

Optional keys: ``time_limit_s`` (CPU seconds per case), ``memory_limit_mb`` (per process), ``float_tolerance``
(numbers within it count as equal), ``lang`` (``python`` or ``cpp``; the CLI's ``--lang`` or a rollout's metadata
wins over it). ``entry`` may be ``Class.method`` (a fresh instance per case). Full description: docs/verifiers.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ring_async.verifiers.errors import TestsFormatError

MODES = ("stdio", "function")
LANGS = ("python", "cpp")
TOP_KEYS = {"mode", "cases", "entry", "time_limit_s", "memory_limit_mb", "float_tolerance", "lang"}
CASE_KEYS = {"stdio": ("input", "output"), "function": ("args", "expected")}
MAX_CASES = 10_000


@dataclass(frozen=True)
class TestsSpec:
    """A validated tests file. ``cases`` holds (input, output) pairs in stdio mode, (args, expected) in function."""

    __test__ = False  # not a pytest class

    mode: str
    cases: tuple[tuple[Any, Any], ...]
    entry: str | None = None
    time_limit_s: float | None = None
    memory_limit_mb: int | None = None
    float_tolerance: float | None = None
    lang: str | None = None

    def inputs(self) -> list[Any]:
        return [case[0] for case in self.cases]


def _fail(where: str, message: str) -> TestsFormatError:
    return TestsFormatError(f"{where}: {message}")


def _number(data: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"{where}.{key}", f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise _fail(f"{where}.{key}", f"must be between {low:g} and {high:g}, got {value!r}")
    return value


def parse_tests(data: Any, where: str = "tests") -> TestsSpec:
    """Validate a decoded tests object (or its JSON text); raises TestsFormatError naming the bad field."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise _fail(where, f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(data, Mapping):
        raise _fail(where, f"must be an object, got {type(data).__name__}")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(TOP_KEYS))}")
    mode = data.get("mode")
    if mode not in MODES:
        raise _fail(f"{where}.mode", f"must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    entry = data.get("entry")
    if mode == "function":
        if not isinstance(entry, str) or not all(part.isidentifier() for part in entry.split(".")) \
                or entry.count(".") > 1:
            raise _fail(f"{where}.entry", f"must name a function ('f') or a method ('Solution.f'), got {entry!r}")
    elif entry is not None:
        raise _fail(f"{where}.entry", "only applies to mode 'function'")
    cases = data.get("cases")
    if not isinstance(cases, list) or not cases:
        raise _fail(f"{where}.cases", "must be a non-empty list")
    if len(cases) > MAX_CASES:
        raise _fail(f"{where}.cases", f"at most {MAX_CASES} cases, got {len(cases)}")
    first, second = CASE_KEYS[mode]
    parsed = []
    for index, case in enumerate(cases):
        at = f"{where}.cases[{index}]"
        if not isinstance(case, Mapping):
            raise _fail(at, f"must be an object, got {type(case).__name__}")
        extra = sorted(set(case) - {first, second})
        if extra:
            raise _fail(at, f"unknown key(s) {', '.join(map(repr, extra))} in {mode} mode; expected "
                            f"{first!r} and {second!r}")
        missing = [k for k in (first, second) if k not in case]
        if missing:
            raise _fail(at, f"lacks {' and '.join(map(repr, missing))}")
        if mode == "stdio":
            for key in (first, second):
                if not isinstance(case[key], str):
                    raise _fail(f"{at}.{key}", f"must be a string, got {type(case[key]).__name__}")
        elif not isinstance(case["args"], list):
            raise _fail(f"{at}.args", f"must be a list of arguments, got {type(case['args']).__name__}")
        parsed.append((case[first], case[second]))
    lang = data.get("lang")
    if lang is not None and lang not in LANGS:
        raise _fail(f"{where}.lang", f"must be one of {', '.join(map(repr, LANGS))}, got {lang!r}")
    memory = _number(data, "memory_limit_mb", where, 16, 65536)
    if memory is not None and memory != int(memory):
        raise _fail(f"{where}.memory_limit_mb", f"must be a whole number of MiB, got {memory!r}")
    return TestsSpec(
        mode=mode,
        cases=tuple(parsed),
        entry=entry,
        time_limit_s=_number(data, "time_limit_s", where, 0.01, 600),
        memory_limit_mb=int(memory) if memory is not None else None,
        float_tolerance=_number(data, "float_tolerance", where, 0, 1e6),
        lang=lang,
    )


def load_tests_file(path: str | Path) -> TestsSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TestsFormatError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise TestsFormatError(f"{path}: not UTF-8 text") from None
    return parse_tests(text, where=str(path))
