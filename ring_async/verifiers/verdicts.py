"""Verdict names shared by the math checker, the code sandbox and the external-reward wait.

A verdict either scores the rollout (reward 1.0 or 0.0, or the external reward) or masks it from training (reward
``None``). Masked verdicts say "we could not tell", never "the policy was wrong": scoring them 0 would teach the
policy to avoid answers our checker cannot parse, or to avoid code that our sandbox failed to run.
"""

from __future__ import annotations

# math
CORRECT = "correct"
INCORRECT = "incorrect"
UNVERIFIABLE = "unverifiable"

# code
ACCEPTED = "accepted"
WRONG_ANSWER = "wrong_answer"
TIME_LIMIT = "time_limit"
MEMORY_LIMIT = "memory_limit"
OUTPUT_LIMIT = "output_limit"
RUNTIME_ERROR = "runtime_error"
COMPILE_ERROR = "compile_error"
SANDBOX_ERROR = "sandbox_error"

# external reward model
SCORED = "scored"
# Not a verdict: what Verifier.Verify answers for an external rollout it registered but did not wait for (its reward
# comes later through submit_reward). The generator's VerifyThenSubmit client filters on this exact string.
PENDING_EXTERNAL = "pending_external"

MATH_VERDICTS = (CORRECT, INCORRECT, UNVERIFIABLE)
CODE_VERDICTS = (
    ACCEPTED, WRONG_ANSWER, TIME_LIMIT, MEMORY_LIMIT, OUTPUT_LIMIT, RUNTIME_ERROR, COMPILE_ERROR, SANDBOX_ERROR,
)
EXTERNAL_VERDICTS = (SCORED, UNVERIFIABLE)

# Verdicts that carry no reward: the rollout is kept out of the loss and counted.
MASKED = frozenset({UNVERIFIABLE, SANDBOX_ERROR})


def binary_reward(verdict: str) -> float | None:
    """1.0 for a pass, None for a masked verdict, 0.0 for every failure."""
    if verdict in MASKED:
        return None
    return 1.0 if verdict in (CORRECT, ACCEPTED) else 0.0
