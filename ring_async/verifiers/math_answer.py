"""Our math front end: which part of a response is the final answer, and the fast path for plain numbers.

Rules (docs/verifiers.md, "Math"):
1. Only the text after the last ``</think>`` counts. A response that opens ``<think>`` and never closes it has no
   final answer (a box inside the reasoning is a draft, not an answer).
2. The answer is the content of the last ``\\boxed{...}`` or ``\\fbox{...}`` with matched braces (``\\{``/``\\}`` are
   literal braces, not grouping). If that last box never closes (a truncated response), there is no answer.
3. Different boxed answers in the final section are hedging and score incorrect; the same answer boxed twice is
   fine. "Different" is after whitespace/spacing-command normalisation, and equal plain numbers (``1/2``, ``0.5``)
   are the same answer.
4. An answer longer than ``max_answer_chars`` scores incorrect (listing many candidates in one box is hedging too).
5. Plain integers, decimals and fractions on both sides are compared exactly here, before any sympy: equal values
   are correct, integers that differ are incorrect, numbers that differ by more than a relative 1e-4 are incorrect;
   anything closer than that (``1/3`` vs ``0.3333``) goes to Math-Verify with its rounding rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
BOX_COMMANDS = ("\\boxed", "\\fbox")
DEFAULT_MAX_ANSWER_CHARS = 512
FAST_PATH_RELATIVE_GAP = 1e-4

# Reasons an answer is missing or refused (all score incorrect).
NO_FINAL_ANSWER = "no_final_answer"  # <think> never closed
NO_BOX = "no_box"
UNCLOSED_BOX = "unclosed_box"
EMPTY_BOX = "empty_box"
HEDGING = "hedging"
TOO_LONG = "answer_too_long"


@dataclass(frozen=True)
class ExtractedAnswer:
    answer: str | None  # the final box's content, stripped; None when there is no usable answer
    reason: str = ""  # why there is none (one of the constants above), "" when there is one
    boxes: int = 0  # boxes found in the final section


def final_section(response: str) -> str | None:
    """The text after the last ``</think>``; the whole response when it has no think block; None when a think
    block is opened and never closed."""
    close = response.rfind(THINK_CLOSE)
    if close != -1:
        return response[close + len(THINK_CLOSE):]
    if THINK_OPEN in response:
        return None
    return response


def _command_at(text: str, index: int) -> int:
    """Length of the box command starting at ``index`` (0 when none): ``\\boxed`` but not ``\\boxedx``."""
    for command in BOX_COMMANDS:
        if text.startswith(command, index):
            after = index + len(command)
            if after < len(text) and text[after].isalpha():
                return 0
            return len(command)
    return 0


def find_boxes(text: str) -> tuple[list[str], bool]:
    """Contents of the top-level boxes of ``text`` in order, and whether the last box is unclosed."""
    boxes: list[str] = []
    i = 0
    n = len(text)
    while True:
        i = text.find("\\", i)
        if i == -1:
            return boxes, False
        length = _command_at(text, i)
        if not length:
            i += 1
            continue
        j = i + length
        while j < n and text[j].isspace():
            j += 1
        if j >= n or text[j] != "{":
            i = j  # \boxed without a brace group is not a box
            continue
        depth = 0
        k = j
        while k < n:
            ch = text[k]
            if ch == "\\":
                k += 2  # an escaped character, \{ and \} included, never opens or closes a group
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        if k >= n:
            return boxes, True
        boxes.append(_unwrap(text[j + 1 : k].strip()))
        i = k + 1


def _unwrap(content: str) -> str:
    """``\\boxed{\\boxed{5}}`` is the answer 5."""
    while True:
        inner, unclosed = find_boxes(content)
        if unclosed or len(inner) != 1:
            return content
        length = _command_at(content, 0)
        if not length or not content.endswith("}"):
            return content
        content = inner[0]


_SPACING = re.compile(r"\\(left|right|displaystyle|!|,|;|:| )|\s+")


def normalise(answer: str) -> str:
    """Spacing-insensitive form of an answer: used for hedging and as the cache key."""
    text = _SPACING.sub("", answer)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    return text.rstrip(".")


def extract_answer(response: str, max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS) -> ExtractedAnswer:
    section = final_section(response)
    if section is None:
        return ExtractedAnswer(None, NO_FINAL_ANSWER)
    boxes, unclosed = find_boxes(section)
    if unclosed:
        return ExtractedAnswer(None, UNCLOSED_BOX, len(boxes) + 1)
    if not boxes:
        return ExtractedAnswer(None, NO_BOX)
    answer = boxes[-1]
    if not answer:
        return ExtractedAnswer(None, EMPTY_BOX, len(boxes))
    if len(answer) > max_answer_chars:
        return ExtractedAnswer(None, TOO_LONG, len(boxes))
    distinct = {normalise(box) for box in boxes}
    if len(distinct) > 1:
        values = {fast_value(box) for box in boxes}
        if None in values or len(values) > 1:
            return ExtractedAnswer(None, HEDGING, len(boxes))
    return ExtractedAnswer(answer, "", len(boxes))


# -- the fast path ---------------------------------------------------------------------------------------------------

_DECIMAL = re.compile(r"([+-]?)([1-9]\d{0,2}(?:,\d{3})+|\d+)?(?:\.(\d*))?")
_FRAC = re.compile(r"([+-]?)\\frac(?:\{([+-]?\d+)\}\{([+-]?\d+)\}|(\d)(\d))")
_SLASH = re.compile(r"([+-]?\d+)/([+-]?\d+)")


@dataclass(frozen=True)
class FastNumber:
    value: Fraction
    integer: bool  # written as an integer (no decimal point, no fraction)


def fast_number(answer: str) -> FastNumber | None:
    """The exact value of a plain integer, decimal or fraction (``-1,234``, ``0.25``, ``.5``, ``3/4``,
    ``\\frac{3}{4}``, ``\\frac34``, ``$5``); None for anything else."""
    text = normalise(answer)
    if text.startswith("\\$"):
        text = text[2:]
    if not text or len(text) > 64:
        return None
    match = _DECIMAL.fullmatch(text)
    if match and (match.group(2) or match.group(3)):
        sign, whole, frac = match.groups()
        digits = (whole or "0").replace(",", "")
        value = Fraction(f"{digits}.{frac}" if frac else digits)
        return FastNumber(-value if sign == "-" else value, frac is None and "." not in text)
    match = _FRAC.fullmatch(text) or _SLASH.fullmatch(text)
    if match is None:
        return None
    groups = [g for g in match.groups() if g is not None]
    sign = ""
    if match.re is _FRAC:
        sign, numerator, denominator = groups[0], groups[1], groups[2]
    else:
        numerator, denominator = groups[0], groups[1]
    if int(denominator) == 0:
        return None
    value = Fraction(int(numerator), int(denominator))
    return FastNumber(-value if sign == "-" else value, False)


def fast_value(answer: str) -> Fraction | None:
    number = fast_number(answer)
    return number.value if number else None


def fast_verdict(gold: FastNumber, answer: FastNumber) -> bool | None:
    """True/False when plain numbers decide it, None when Math-Verify's rounding rules must."""
    if gold.value == answer.value:
        return True
    if gold.integer and answer.integer:
        return False
    gap = abs(gold.value - answer.value)
    if gap > FAST_PATH_RELATIVE_GAP * max(1, abs(gold.value)):
        return False
    return None
