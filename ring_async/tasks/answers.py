"""The final answer of a response, as the math verifier reads it (the last ``\\boxed{}`` after ``</think>``).

A cheap, process-local exact match for tests and quick checks that do not need the verifier's worker pool; RL
rewards and checkpoint selection use :class:`ring_async.verifiers.MathChecker`, which also accepts equivalent forms.
"""

from __future__ import annotations

from ring_async.verifiers.math_answer import extract_answer, normalise


def extract_boxed(response: str) -> str | None:
    """The final answer (None when there is none, or it is hedged between different boxes)."""
    return extract_answer(response).answer


def boxed_matches(response: str, answer: str) -> bool:
    """Exact match of the final answer with the reference, ignoring spacing (``- 5`` is ``-5``)."""
    got = extract_boxed(response)
    return got is not None and normalise(got) == normalise(answer)
