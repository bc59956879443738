"""Synthetic code: small Python functions from templates, with hidden unit tests for the code sandbox.

Each template is a description ("returns the sum of the elements of xs that are greater than 3"), the teacher's
solution and plan, and an independent reference implementation that computes the expected test outputs (so a wrong
teacher solution is caught by tests/test_tasks.py, not by RL). Difficulty level d draws from templates of
difficulty 1..d: higher levels add sorting, running state, nested loops and edge cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ring_async.tasks.record import TaskRecord

ENTRY = "f"
LIST_ARGS = ("xs", "nums", "values")
STR_ARGS = ("s", "text", "word")
INSTRUCTION = "Answer with the function in a ```python code block."
CODE_LEVELS = (1, 2, 3)
CASES_PER_TASK = 5


@dataclass(frozen=True)
class CodeTemplate:
    name: str
    difficulty: int
    kind: str  # "list": one list[int] argument; "str": one str argument
    description: str  # formatted with {a} (the argument's name) and the template's parameters
    plan: str  # the teacher's one-line reasoning, same format
    body: str  # the function body, lines separated by "\n", without indentation; same format
    reference: Callable[..., Any]  # reference(arg, **params) -> expected
    params: Sequence[dict[str, Any]] = ({},)
    nonempty: bool = False  # the function is only defined on non-empty input
    values: tuple[int, int] = (-5, 15)  # element range of generated lists

    def arg_names(self) -> tuple[str, ...]:
        return LIST_ARGS if self.kind == "list" else STR_ARGS


def _ks(lo: int, hi: int) -> list[dict[str, Any]]:
    return [{"k": k} for k in range(lo, hi + 1)]


_OPS: dict[str, Callable[[int, int], bool]] = {
    ">": lambda x, k: x > k, ">=": lambda x, k: x >= k, "<": lambda x, k: x < k, "<=": lambda x, k: x <= k,
}
_OP_WORDS = {">": "greater than", ">=": "at least", "<": "less than", "<=": "at most"}


def _compare(lo: int, hi: int) -> list[dict[str, Any]]:
    return [{"op": op, "words": words, "k": k} for op, words in _OP_WORDS.items() for k in range(lo, hi + 1)]


def _running(xs: list[int]) -> list[int]:
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out


def _product(xs: list[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def _longest_run(xs: list[int]) -> int:
    best = run = 0
    for i, x in enumerate(xs):
        run = run + 1 if i and x == xs[i - 1] else 1
        best = max(best, run)
    return best


TEMPLATES: tuple[CodeTemplate, ...] = (
    # difficulty 1: one filter, map or reduction
    CodeTemplate("sum_compare", 1, "list", "the sum of the elements of {a} that are {words} {k}",
                 "Keep the elements {words} {k} and add them up.", "return sum(x for x in {a} if x {op} {k})",
                 lambda xs, op, k, words: sum(x for x in xs if _OPS[op](x, k)), _compare(0, 9)),
    CodeTemplate("count_compare", 1, "list", "the number of elements of {a} that are {words} {k}",
                 "Count the elements {words} {k}.", "return sum(1 for x in {a} if x {op} {k})",
                 lambda xs, op, k, words: sum(1 for x in xs if _OPS[op](x, k)), _compare(0, 9)),
    CodeTemplate("keep_compare", 1, "list", "the elements of {a} that are {words} {k}, in their original order",
                 "Filter the elements {words} {k}, keeping their order.", "return [x for x in {a} if x {op} {k}]",
                 lambda xs, op, k, words: [x for x in xs if _OPS[op](x, k)], _compare(0, 9)),
    CodeTemplate("count_divisible", 1, "list", "the number of elements of {a} that are divisible by {k}",
                 "Count the elements whose remainder modulo {k} is zero.",
                 "return sum(1 for x in {a} if x % {k} == 0)", lambda xs, k: sum(1 for x in xs if x % k == 0),
                 _ks(2, 9)),
    CodeTemplate("scale", 1, "list", "a list with every element of {a} multiplied by {k}",
                 "Multiply each element by {k} in a list comprehension.", "return [x * {k} for x in {a}]",
                 lambda xs, k: [x * k for x in xs], _ks(2, 9)),
    CodeTemplate("shift", 1, "list", "a list with {k} added to every element of {a}",
                 "Add {k} to each element in a list comprehension.", "return [x + {k} for x in {a}]",
                 lambda xs, k: [x + k for x in xs], _ks(1, 9)),
    CodeTemplate("unshift", 1, "list", "a list with {k} subtracted from every element of {a}",
                 "Subtract {k} from each element in a list comprehension.", "return [x - {k} for x in {a}]",
                 lambda xs, k: [x - k for x in xs], _ks(1, 9)),
    CodeTemplate("max_plus", 1, "list", "the largest element of {a} plus {k}", "Take the maximum and add {k}.",
                 "return max({a}) + {k}", lambda xs, k: max(xs) + k, _ks(1, 9), nonempty=True),
    CodeTemplate("min_times", 1, "list", "the smallest element of {a} multiplied by {k}",
                 "Take the minimum and multiply it by {k}.", "return min({a}) * {k}", lambda xs, k: min(xs) * k,
                 _ks(2, 9), nonempty=True),
    CodeTemplate("count_equal", 1, "list", "the number of times {k} appears in {a}",
                 "The list method count does exactly this.", "return {a}.count({k})", lambda xs, k: xs.count(k),
                 _ks(0, 9), values=(0, 9)),
    CodeTemplate("reverse", 1, "list", "the elements of {a} in reverse order", "A slice with step -1 reverses.",
                 "return {a}[::-1]", lambda xs: xs[::-1]),
    CodeTemplate("sum_squares", 1, "list", "the sum of the squares of the elements of {a}",
                 "Square each element and add them up.", "return sum(x * x for x in {a})",
                 lambda xs: sum(x * x for x in xs)),
    CodeTemplate("first_k", 1, "list", "a list of the first {k} elements of {a}",
                 "A slice up to {k} gives the first {k} elements.", "return {a}[:{k}]", lambda xs, k: xs[:k],
                 _ks(1, 5)),
    CodeTemplate("drop_k", 1, "list", "{a} without its first {k} elements",
                 "A slice from {k} drops the first {k} elements.", "return {a}[{k}:]", lambda xs, k: xs[k:],
                 _ks(1, 5)),
    CodeTemplate("repeat", 1, "str", "the string {a} repeated {k} times", "Multiplying a string by {k} repeats it.",
                 "return {a} * {k}", lambda s, k: s * k, _ks(2, 5)),
    CodeTemplate("count_letter", 1, "str", "the number of times the letter '{c}' appears in the string {a}",
                 "The string method count does exactly this.", "return {a}.count('{c}')",
                 lambda s, c: s.count(c), [{"c": c} for c in "abcdeiou"]),
    CodeTemplate("reverse_str", 1, "str", "the string {a} reversed", "A slice with step -1 reverses.",
                 "return {a}[::-1]", lambda s: s[::-1]),
    CodeTemplate("upper", 1, "str", "the string {a} in upper case", "The string method upper does this.",
                 "return {a}.upper()", lambda s: s.upper()),
    # difficulty 2: ordering, positions, accumulation
    CodeTemplate("sum_even_positions", 2, "list", "the sum of the elements of {a} at even positions (0, 2, 4, ...)",
                 "A slice with step 2 picks the even positions; add them up.", "return sum({a}[::2])",
                 lambda xs: sum(xs[::2])),
    CodeTemplate("sort_desc", 2, "list", "the elements of {a} sorted from largest to smallest",
                 "Sort with reverse=True.", "return sorted({a}, reverse=True)", lambda xs: sorted(xs, reverse=True)),
    CodeTemplate("distinct_sorted", 2, "list", "the distinct elements of {a} in increasing order",
                 "A set removes duplicates; sort the result.", "return sorted(set({a}))", lambda xs: sorted(set(xs)),
                 values=(0, 6)),
    CodeTemplate("running_sum", 2, "list",
                 "the running sums of {a} (element i of the result is the sum of the first i + 1 elements)",
                 "Keep a running total and append it after each element.",
                 "total = 0\nout = []\nfor x in {a}:\n    total += x\n    out.append(total)\nreturn out", _running),
    CodeTemplate("spread", 2, "list", "the difference between the largest and the smallest element of {a}",
                 "Subtract the minimum from the maximum.", "return max({a}) - min({a})",
                 lambda xs: max(xs) - min(xs), nonempty=True),
    CodeTemplate("product", 2, "list", "the product of the elements of {a} (1 for an empty list)",
                 "Multiply into an accumulator that starts at 1.",
                 "out = 1\nfor x in {a}:\n    out *= x\nreturn out", _product, values=(-3, 5)),
    CodeTemplate("argmax", 2, "list", "the index of the first occurrence of the largest element of {a}",
                 "index finds the first position of the maximum.", "return {a}.index(max({a}))",
                 lambda xs: xs.index(max(xs)), nonempty=True, values=(0, 6)),
    CodeTemplate("count_rises", 2, "list", "the number of elements of {a} that are greater than the element before them",
                 "Compare each element with its predecessor and count the rises.",
                 "return sum(1 for i in range(1, len({a})) if {a}[i] > {a}[i - 1])",
                 lambda xs: sum(1 for i in range(1, len(xs)) if xs[i] > xs[i - 1])),
    CodeTemplate("vowels", 2, "str", "the number of vowels (a, e, i, o, u) in the string {a}",
                 "Count the characters that are in 'aeiou'.", "return sum(1 for ch in {a} if ch in 'aeiou')",
                 lambda s: sum(1 for ch in s if ch in "aeiou")),
    # difficulty 3: two conditions, pairs, state across elements
    CodeTemplate("weighted_filter", 3, "list", "the sum of the elements of {a} greater than {k}, each multiplied by {m}",
                 "Filter the elements above {k}, multiply each by {m}, and add them up.",
                 "return sum(x * {m} for x in {a} if x > {k})", lambda xs, k, m: sum(x * m for x in xs if x > k),
                 [{"k": k, "m": m} for k in range(0, 6) for m in range(2, 6)]),
    CodeTemplate("second_largest", 3, "list", "the second largest distinct element of {a}, or None if there is none",
                 "Sort the distinct elements; the second from the end is the answer if it exists.",
                 "distinct = sorted(set({a}))\nreturn distinct[-2] if len(distinct) >= 2 else None",
                 lambda xs: sorted(set(xs))[-2] if len(set(xs)) >= 2 else None, values=(0, 6)),
    CodeTemplate("unique_once", 3, "list", "the elements of {a} that appear exactly once, in their original order",
                 "Keep the elements whose count is one.", "return [x for x in {a} if {a}.count(x) == 1]",
                 lambda xs: [x for x in xs if xs.count(x) == 1], values=(0, 6)),
    CodeTemplate("longest_run", 3, "list",
                 "the length of the longest run of equal adjacent elements in {a} (0 for an empty list)",
                 "Track the current run length and the best one seen.",
                 "best = 0\nrun = 0\nfor i, x in enumerate({a}):\n    run = run + 1 if i > 0 and x == {a}[i - 1] else 1\n"
                 "    best = max(best, run)\nreturn best", _longest_run, values=(0, 2)),
    CodeTemplate("pairs_with_sum", 3, "list", "the number of index pairs i < j with {a}[i] + {a}[j] == {k}",
                 "Check every pair of positions once.",
                 "n = len({a})\nreturn sum(1 for i in range(n) for j in range(i + 1, n) if {a}[i] + {a}[j] == {k})",
                 lambda xs, k: sum(1 for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[i] + xs[j] == k),
                 _ks(4, 12), values=(0, 8)),
    CodeTemplate("alternating_sum", 3, "list",
                 "the alternating sum of {a}: the first element minus the second plus the third, and so on",
                 "Add elements at even positions and subtract those at odd positions.",
                 "return sum(x if i % 2 == 0 else -x for i, x in enumerate({a}))",
                 lambda xs: sum(x if i % 2 == 0 else -x for i, x in enumerate(xs))),
)


def _templates_up_to(difficulty: int) -> list[CodeTemplate]:
    if difficulty not in CODE_LEVELS:
        raise ValueError(f"code difficulty must be one of {list(CODE_LEVELS)}, got {difficulty}")
    return [t for t in TEMPLATES if t.difficulty <= difficulty]


def _random_input(rng: random.Random, template: CodeTemplate) -> Any:
    length = rng.randint(1 if template.nonempty else 0, 8)
    if template.kind == "str":
        return "".join(rng.choice("abcdeiou") for _ in range(length))
    lo, hi = template.values
    return [rng.randint(lo, hi) for _ in range(length)]


def _solution(template: CodeTemplate, arg: str, params: dict[str, Any]) -> str:
    body = template.body.format(a=arg, **params)
    indented = "\n".join("    " + line for line in body.split("\n"))
    return f"def {ENTRY}({arg}):\n{indented}\n"


def code_task(rng: random.Random, difficulty: int) -> TaskRecord:
    template = rng.choice(_templates_up_to(difficulty))
    params = dict(rng.choice(list(template.params)))
    arg = rng.choice(template.arg_names())
    description = template.description.format(a=arg, **params)
    inputs: list[Any] = []
    while len(inputs) < CASES_PER_TASK:
        value = _random_input(rng, template)
        if value not in inputs or len(inputs) >= 3:  # mostly distinct cases; tiny input spaces may repeat
            inputs.append(value)
    cases = [{"args": [value], "expected": template.reference(value, **params)} for value in inputs]
    solution = _solution(template, arg, params)
    plan = template.plan.format(a=arg, **params)
    key = ",".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "words")
    return TaskRecord(
        prompt=f"Write a Python function {ENTRY}({arg}) that returns {description}.\n{INSTRUCTION}",
        reward_type="code",
        tests={"mode": "function", "entry": ENTRY, "cases": cases},
        response=f"<think>\n{plan}\n</think>\n```python\n{solution}```",
        metadata={
            "source": "synthetic",
            "kind": template.name,
            "difficulty": template.difficulty,
            # The argument's name is cosmetic: every naming of one function lands in the same split.
            "split_key": f"code:{template.name}:{key}",
        },
    )
