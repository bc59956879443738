"""Comparison of a program's output with the expected output, done on the host (expected values never enter the jail).

- stdio: whitespace-separated tokens, exactly, or within a tolerance for tokens that are both decimal numbers;
- function: the result as JSON data, compared structurally. The program's objects are never compared (its ``__eq__``
  is never trusted): the harness serialised the result with the base types' own methods and we parse that text.
  Booleans are not numbers here (``True`` does not equal ``1``); ``2`` equals ``2.0``; NaN equals nothing.
"""

from __future__ import annotations

import math
import re
from typing import Any

_DECIMAL = re.compile(rb"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _close(actual: float, expected: float, tolerance: float) -> bool:
    return abs(actual - expected) <= tolerance * max(1.0, abs(expected))


def compare_stdout(actual: bytes, expected: str, tolerance: float | None = None) -> tuple[bool, str]:
    """(equal, why not). Tokens are split on any whitespace; a float tolerance is absolute below 1, relative above."""
    got = actual.split()
    want = expected.encode("utf-8").split()
    if len(got) != len(want):
        return False, f"expected {len(want)} tokens, got {len(got)}"
    for index, (a, b) in enumerate(zip(got, want)):
        if a == b:
            continue
        if (tolerance is not None and _DECIMAL.fullmatch(a) and _DECIMAL.fullmatch(b)
                and _close(float(a), float(b), tolerance)):
            continue
        return False, f"token {index}: expected {b[:40].decode('utf-8', 'replace')!r}, " \
                      f"got {a[:40].decode('utf-8', 'replace')!r}"
    return True, ""


def equal_values(actual: Any, expected: Any, tolerance: float | None = None) -> bool:
    """Structural equality of two JSON values (as json.loads returns them)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if isinstance(expected, float) or isinstance(actual, float):
            if math.isnan(actual) or math.isnan(expected):
                return False
            if tolerance is not None and not (math.isinf(actual) or math.isinf(expected)):
                return _close(float(actual), float(expected), tolerance)
        return actual == expected
    if isinstance(expected, str) or expected is None:
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(actual) == len(expected)
                and all(equal_values(a, b, tolerance) for a, b in zip(actual, expected)))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(equal_values(actual[k], expected[k], tolerance) for k in expected))
    return False
