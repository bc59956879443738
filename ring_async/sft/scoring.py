"""Scoring sampled responses during checkpoint selection, with the project's verifiers.

Math goes through :class:`~ring_async.verifiers.MathChecker` (the final ``\\boxed{}`` against the reference, by
Math-Verify behind a fast path for plain numbers), code through :class:`~ring_async.verifiers.CodeJudge` (the last
```python block run against the hidden tests in the sandbox). A verdict whose reward is not trusted
(``unverifiable``, ``sandbox_error``) counts for entropy but not for accuracy, as in RL.
"""

from __future__ import annotations

from typing import Any

from ring_async.tasks.record import TaskRecord


class Scorer:
    """Holds the verifiers for one probe run; the math worker and the code jails start on first use."""

    def __init__(self) -> None:
        self._math: Any = None
        self._code: Any = None

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for verifier in (self._math, self._code):
            if verifier is not None:
                verifier.close()
        self._math = self._code = None

    def score(self, record: TaskRecord, response: str) -> float | None:
        """The reward (1.0 / 0.0), or None when the verdict is masked or the task has nothing to check against."""
        if record.reward_type == "math" and record.answer is not None:
            if self._math is None:
                from ring_async.verifiers import MathChecker

                self._math = MathChecker(workers=1)
            return self._math.check(record.answer, response).reward
        if record.reward_type == "code" and record.tests is not None:
            from ring_async.verifiers import CodeJudge, parse_tests
            from ring_async.verifiers.code_answer import extract_program

            program, _ = extract_program(response, "python")
            if program is None:
                return 0.0
            if self._code is None:
                self._code = CodeJudge(pool_size=1)
            return self._code.judge(program, parse_tests(record.tests), "python").reward
        return None
