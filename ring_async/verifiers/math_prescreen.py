"""Pre-screen of answers (and golds) whose evaluation explodes: exponent towers, huge powers, huge factorials.

sympy evaluates ``9^{9^{9}}`` eagerly into a number with hundreds of millions of digits, inside GMP, where no Python
signal can interrupt it. The worker pool's hard deadline would still kill it, but that costs a worker respawn and up
to a deadline of latency; these inputs are recognised here in microseconds instead and reported ``unverifiable``.

The screen is deliberately narrow (numbers only): an exponent is estimated only when it is made of numbers,
``+ - * / ^ !``, parentheses and braces; symbolic exponents (``e^{i\\pi}``, ``x^{n}``) are left alone.
"""

from __future__ import annotations

import math
import re

MAX_EXPONENT = 10_000  # |exponent| of any power; 2^{10000} has 3,011 digits, (x+1)^{10000} is already slow
MAX_FACTORIAL = 1_000

_FACTORIAL = re.compile(r"(\d+)\s*!")
_COMMANDS = (("\\left", ""), ("\\right", ""), ("\\cdot", "*"), ("\\times", "*"), ("**", "^"), ("\\!", ""),
             ("\\,", ""), ("\\ ", ""))


def _clean(text: str) -> str:
    for old, new in _COMMANDS:
        text = text.replace(old, new)
    return text


def _group(text: str, start: int) -> tuple[str, int]:
    """The exponent starting at ``start``: a brace group, or a single token (a number or one character)."""
    while start < len(text) and text[start] == " ":
        start += 1
    if start >= len(text):
        return "", start
    if text[start] == "{":
        depth = 0
        for k in range(start, len(text)):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    return text[start + 1 : k], k + 1
        return text[start + 1 :], len(text)
    if text[start] in "+-":
        token, end = _group(text, start + 1)
        return text[start] + token, end
    end = start
    while end < len(text) and (text[end].isdigit() or text[end] == "."):
        end += 1
    if end == start:
        end = start + 1
    return text[start:end], end


class _NotNumeric(Exception):
    pass


class _Evaluator:
    """Floating-point value of a numeric expression; overflow becomes inf. Raises _NotNumeric on any symbol."""

    def __init__(self, text: str) -> None:
        self.tokens = re.findall(r"\d+\.?\d*|\.\d+|[-+*/^()!{}]|\S", text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _NotNumeric()
        self.pos += 1
        return token

    def value(self) -> float:
        result = self.sum()
        if self.peek() is not None:
            raise _NotNumeric()
        return result

    def sum(self) -> float:
        total = self.product()
        while self.peek() in ("+", "-"):
            total = total + self.product() if self.take() == "+" else total - self.product()
        return total

    def product(self) -> float:
        total = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.unary()
            total = total * right if op == "*" else (total / right if right else math.inf)
        return total

    def unary(self) -> float:
        if self.peek() in ("+", "-"):
            sign = -1.0 if self.take() == "-" else 1.0
            return sign * self.unary()
        return self.power()

    def power(self) -> float:
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            exponent = self.unary()  # right-associative
            return _pow(base, exponent)
        return base

    def postfix(self) -> float:
        value = self.atom()
        while self.peek() == "!":
            self.take()
            value = math.inf if value > 170 else float(math.factorial(int(value))) if value >= 0 else math.nan
        return value

    def atom(self) -> float:
        token = self.take()
        if token in ("(", "{"):
            inner = self.sum()
            if self.take() not in (")", "}"):
                raise _NotNumeric()
            return inner
        try:
            return float(token)
        except ValueError:
            raise _NotNumeric() from None


def _pow(base: float, exponent: float) -> float:
    if abs(base) in (0.0, 1.0):
        return base if exponent > 0 else 1.0
    try:
        magnitude = exponent * math.log10(abs(base))
    except (ValueError, OverflowError):
        return math.inf
    if magnitude > 300:
        return math.inf
    try:
        return math.pow(base, exponent)
    except (ValueError, OverflowError):
        return math.inf


def numeric_value(text: str) -> float | None:
    """The value of a numbers-only expression, None when it has symbols (or does not parse)."""
    try:
        return _Evaluator(text).value()
    except (_NotNumeric, RecursionError):
        return None


def explosive(text: str) -> str | None:
    """Why evaluating ``text`` would blow up, or None. Checks every power's exponent and every factorial."""
    text = _clean(text)
    for match in _FACTORIAL.finditer(text):
        if int(match.group(1)) > MAX_FACTORIAL:
            return f"factorial of {match.group(1)[:20]} (over {MAX_FACTORIAL})"
    index = text.find("^")
    while index != -1:
        exponent, _end = _group(text, index + 1)
        value = numeric_value(exponent)
        if value is not None and not abs(value) <= MAX_EXPONENT:  # also catches inf and nan
            return f"exponent {exponent[:40]!r} is over {MAX_EXPONENT}"
        index = text.find("^", index + 1)
    return None
