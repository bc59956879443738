"""Synthetic math: multi-step integer arithmetic (and, optionally, one-variable linear equations).

A teacher writes the working one operation a line, multiplications first (operator precedence), then additions and
subtractions left to right, inside ``<think>...</think>``, and ends with the answer in ``\\boxed{}``. The
difficulty level sets how many numbers an expression has, how large they are, and whether negatives may appear.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ring_async.tasks.record import TaskRecord

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
QUESTIONS = ("Compute {}.", "Calculate {}.", "What is {}?", "Evaluate {}.")
# A little stylistic freedom in the teacher, as a sampled teacher has: the policy keeps some entropy here.
CONCLUSIONS = ("The answer is \\boxed{{{}}}.", "So the final answer is \\boxed{{{}}}.", "\\boxed{{{}}}")


@dataclass(frozen=True)
class MathLevel:
    operands: int  # numbers in an expression (operations = operands - 1)
    max_value: int  # summands are drawn from 1..max_value
    max_factor: int  # the right operand of a multiplication is drawn from 2..max_factor (0: no multiplication)
    allow_negative: bool  # whether intermediate results may go below zero
    equation_max: int  # linear equations a*x + b = c use |x| <= equation_max


MATH_LEVELS: dict[int, MathLevel] = {
    1: MathLevel(operands=2, max_value=20, max_factor=0, allow_negative=False, equation_max=9),
    2: MathLevel(operands=3, max_value=30, max_factor=9, allow_negative=False, equation_max=12),
    3: MathLevel(operands=3, max_value=99, max_factor=9, allow_negative=True, equation_max=20),
    4: MathLevel(operands=4, max_value=99, max_factor=12, allow_negative=True, equation_max=50),
    5: MathLevel(operands=5, max_value=999, max_factor=20, allow_negative=True, equation_max=99),
}


def _level(difficulty: int) -> MathLevel:
    try:
        return MATH_LEVELS[difficulty]
    except KeyError:
        raise ValueError(f"math difficulty must be one of {sorted(MATH_LEVELS)}, got {difficulty}") from None


def _evaluate(numbers: list[int], ops: list[str]) -> tuple[list[str], int]:
    """Working lines and value of ``n0 op0 n1 op1 ...`` with * before + and -, each step one line."""
    lines: list[str] = []
    values, pending = [numbers[0]], []
    for op, n in zip(ops, numbers[1:]):
        if op == "*":
            product = values[-1] * n
            lines.append(f"{values[-1]} * {n} = {product}")
            values[-1] = product
        else:
            pending.append(op)
            values.append(n)
    total = values[0]
    for op, n in zip(pending, values[1:]):
        new = total + n if op == "+" else total - n
        lines.append(f"{total} {op} {n} = {new}")
        total = new
    return lines, total


def _running_values(numbers: list[int], ops: list[str]) -> list[int]:
    lines, _ = _evaluate(numbers, ops)
    return [int(line.rsplit("= ", 1)[1]) for line in lines]


def arithmetic_task(rng: random.Random, difficulty: int) -> TaskRecord:
    level = _level(difficulty)
    operators = "+-*" if level.max_factor else "+-"
    while True:
        ops = [rng.choice(operators) for _ in range(level.operands - 1)]
        numbers = [rng.randint(1, level.max_value)]
        for op in ops:
            numbers.append(rng.randint(2, level.max_factor) if op == "*" else rng.randint(1, level.max_value))
        if level.allow_negative or min(_running_values(numbers, ops)) >= 0:
            break
    expression = str(numbers[0]) + "".join(f" {op} {n}" for op, n in zip(ops, numbers[1:]))
    lines, value = _evaluate(numbers, ops)
    return _task(rng, rng.choice(QUESTIONS).format(expression), lines, value, expression, difficulty, "arithmetic")


def linear_equation_task(rng: random.Random, difficulty: int) -> TaskRecord:
    level = _level(difficulty)
    x = rng.randint(-level.equation_max, level.equation_max) if level.allow_negative else rng.randint(
        0, level.equation_max
    )
    a = rng.randint(2, max(2, min(9, level.max_factor or 5)))
    b = rng.randint(1, level.max_value)
    c = a * x + b
    equation = f"{a}x + {b} = {c}"
    lines = [f"{a}x = {c} - {b}", f"{a}x = {c - b}", f"x = {c - b} / {a}", f"x = {x}"]
    question = f"Solve for x: {equation}."
    return _task(rng, question, lines, x, equation, difficulty, "linear_equation")


def _task(
    rng: random.Random, question: str, lines: list[str], value: int, problem: str, difficulty: int, kind: str
) -> TaskRecord:
    working = "\n".join(lines)
    response = f"<think>\n{working}\n</think>\n{rng.choice(CONCLUSIONS).format(value)}"
    return TaskRecord(
        prompt=f"{question}\n{INSTRUCTION}",
        reward_type="math",
        answer=str(value),
        response=response,
        # split_key: every phrasing of one problem lands in the same split, so held-out problems are truly unseen.
        metadata={"source": "synthetic", "kind": kind, "difficulty": difficulty, "split_key": f"math:{problem}"},
    )


def math_task(rng: random.Random, difficulty: int, linear_fraction: float = 0.0) -> TaskRecord:
    """One synthetic math task; ``linear_fraction`` of them are linear equations instead of arithmetic."""
    if linear_fraction > 0 and rng.random() < linear_fraction:
        return linear_equation_task(rng, difficulty)
    return arithmetic_task(rng, difficulty)
