"""One task: a prompt and what a verifier needs to score a response to it (plus, for SFT, a teacher response).

This is the record format of every task file, synthetic or a user's own (docs/policy.md, "Task files"):

- ``prompt`` (str, required): the user turn, exactly as the policy sees it (the chat template is applied later);
- ``reward_type`` (str, required): which verifier scores it: ``math`` needs ``answer``, ``code`` needs ``tests``;
- ``answer`` (str): the reference final answer of a math task, compared with the response's last ``\\boxed{}``;
- ``tests`` (dict): hidden unit tests of a code task, checked by the code sandbox's own parser
  (:func:`ring_async.verifiers.parse_tests`): ``{"mode": "function", "entry": "f", "cases": [{"args": [...],
  "expected": ...}]}`` or ``{"mode": "stdio", "cases": [{"input": "...", "output": "..."}]}``;
- ``id`` (str): a stable id; derived from the prompt's content when absent;
- ``response`` (str): a teacher response (the distillation target of SFT); not needed for RL;
- ``metadata`` (dict): anything else (difficulty, source, tags), carried to rollouts as msgpack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import msgpack

from ring_async.broker.prompts import Prompt

REWARD_TYPES = ("math", "code")
FIELDS = ("id", "prompt", "reward_type", "answer", "tests", "response", "metadata")


def prompt_digest(prompt: str) -> str:
    """Content id of a prompt: identical prompt text gets the same id, whatever file or generator it came from."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TaskRecord:
    prompt: str
    reward_type: str
    answer: str | None = None
    tests: dict[str, Any] | None = None
    response: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", prompt_digest(self.prompt))

    def to_json(self) -> dict[str, Any]:
        """The file form: absent optional fields are left out, so a user's hand-written file looks the same."""
        out: dict[str, Any] = {"id": self.id, "prompt": self.prompt, "reward_type": self.reward_type}
        for key in ("answer", "tests", "response"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    def to_prompt(self, priority: int = 0, group_size: int | None = None) -> Prompt:
        """The broker's view of this task (tests travel as JSON text, metadata as msgpack)."""
        return Prompt(
            prompt_id=self.id,
            prompt=self.prompt,
            reward_type=self.reward_type,
            answer=self.answer,
            tests=json.dumps(self.tests, sort_keys=True) if self.tests is not None else None,
            priority=priority,
            group_size=group_size,
            metadata=msgpack.packb(self.metadata) if self.metadata else None,
        )


def record_from_mapping(data: Any) -> TaskRecord:
    """Validate one decoded record; raises ValueError with what is wrong (the reader adds file and line)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a record must be an object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("'prompt' must be a non-empty string")
    reward_type = data.get("reward_type")
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"'reward_type' must be one of {', '.join(map(repr, REWARD_TYPES))}, got {reward_type!r}")
    answer = _optional_str(data, "answer")
    response = _optional_str(data, "response")
    record_id = _optional_str(data, "id") or ""
    tests = data.get("tests")
    if isinstance(tests, str):
        # Parquet (and some JSONL writers) carry the tests as JSON text.
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as err:
            raise ValueError(f"'tests' is a string but not valid JSON: {err.msg}") from None
    if tests is not None:
        _check_tests(tests)
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, Mapping):
        raise ValueError(f"'metadata' must be an object, got {type(metadata).__name__}")
    if reward_type == "math" and answer is None:
        raise ValueError("a 'math' task needs 'answer'")
    if reward_type == "code" and tests is None:
        raise ValueError("a 'code' task needs 'tests'")
    return TaskRecord(prompt, reward_type, answer, tests, response, dict(metadata), record_id)


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    # Integer answers written without quotes are common in hand-made files; the checker compares text.
    return str(value)


def _check_tests(tests: Any) -> None:
    # The code sandbox's own parser: a file that loads here is a file the sandbox accepts.
    from ring_async.verifiers.tests_format import parse_tests
    from ring_async.verifiers.errors import TestsFormatError

    try:
        parse_tests(tests)
    except TestsFormatError as err:
        raise ValueError(f"invalid 'tests': {err}") from None
