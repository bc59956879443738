"""Arrow schemas of the data plane: what crosses the wire between broker, generators, verifiers and learners.

Three record types, each an Arrow schema tagged with its name and version in the schema metadata:

- ``prompt_group``: a prompt leased to a generator, to be sampled K times under one group id;
- ``rollout``: one sampled response with its token ids, behaviour logprobs, policy versions and (once verified)
  its reward and verdict;
- ``train_batch``: the responses the broker selected for one optimizer step, each cut to its loss-bearing tokens and
  carrying its group advantage. Step-level facts (step id, Φ, cut mode, policy version) ride in the schema metadata.

Token ids are ``int32`` and logprobs ``float32`` in ``list`` columns, so a batch of millions of tokens is a handful of
contiguous buffers that decode without copies. Free-form per-record data (task fields, test cases, tags) is msgpack in
a ``binary`` column: the schema stays fixed while tasks differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_NAME_KEY = b"ring_async.schema"
SCHEMA_VERSION_KEY = b"ring_async.schema_version"

TOKENS = pa.list_(pa.int32())
LOGPROBS = pa.list_(pa.float32())


@dataclass(frozen=True)
class RecordSchema:
    """A named, versioned Arrow schema and the columns that may not hold nulls."""

    name: str
    version: int
    arrow: pa.Schema
    required: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"{self.name}/v{self.version}"

    def with_metadata(self, extra: dict[str, str] | None = None) -> pa.Schema:
        meta = {SCHEMA_NAME_KEY: self.name.encode(), SCHEMA_VERSION_KEY: str(self.version).encode()}
        for key, value in (extra or {}).items():
            meta[key.encode()] = value.encode()
        return self.arrow.with_metadata(meta)


def _record(name: str, version: int, fields: list[pa.Field]) -> RecordSchema:
    schema = pa.schema(fields)
    return RecordSchema(name, version, schema, tuple(f.name for f in fields if not f.nullable))


PROMPT_GROUP = _record(
    "prompt_group",
    1,
    [
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        # Empty when the generator tokenizes the text itself (the usual case for datasets of text).
        pa.field("prompt_token_ids", TOKENS, nullable=False),
        pa.field("reward_type", pa.string(), nullable=False),
        pa.field("answer", pa.string()),
        pa.field("tests", pa.string()),
        pa.field("group_size", pa.int32(), nullable=False),
        pa.field("priority", pa.int32(), nullable=False),
        pa.field("lease_expires_at", pa.float64(), nullable=False),
        pa.field("metadata", pa.binary()),
    ],
)

ROLLOUT = _record(
    "rollout",
    1,
    [
        pa.field("rollout_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("prompt_token_ids", TOKENS, nullable=False),
        pa.field("response_token_ids", TOKENS, nullable=False),
        pa.field("behaviour_logprobs", LOGPROBS, nullable=False),
        # A sample whose decoding spanned a weight update records the first and the last version it saw.
        pa.field("policy_version_first", pa.int64(), nullable=False),
        pa.field("policy_version_last", pa.int64(), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("reward_type", pa.string(), nullable=False),
        # Null until verified, and null for verdicts that are masked from training (unverifiable, sandbox_error).
        pa.field("reward", pa.float32()),
        pa.field("verdict", pa.string(), nullable=False),
        pa.field("generation_s", pa.float64(), nullable=False),
        pa.field("verification_s", pa.float64(), nullable=False),
        pa.field("completed_at", pa.float64(), nullable=False),
        pa.field("metadata", pa.binary()),
    ],
)

TRAIN_BATCH = _record(
    "train_batch",
    1,
    [
        pa.field("rollout_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt_token_ids", TOKENS, nullable=False),
        # Cut to the loss-bearing tokens: every response token in a train batch carries loss.
        pa.field("response_token_ids", TOKENS, nullable=False),
        pa.field("behaviour_logprobs", LOGPROBS, nullable=False),
        pa.field("advantage", pa.float32(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("policy_version_first", pa.int64(), nullable=False),
        pa.field("policy_version_last", pa.int64(), nullable=False),
        # Length of the response before the cut; equal to len(response_token_ids) unless this row straddled Φ.
        pa.field("full_response_tokens", pa.int32(), nullable=False),
    ],
)

# Columns whose per-row list lengths must agree (a logprob for every response token).
ALIGNED_LISTS: dict[str, tuple[str, str]] = {
    ROLLOUT.name: ("response_token_ids", "behaviour_logprobs"),
    TRAIN_BATCH.name: ("response_token_ids", "behaviour_logprobs"),
}

ALL_SCHEMAS = {s.name: s for s in (PROMPT_GROUP, ROLLOUT, TRAIN_BATCH)}

# Verdicts whose reward is not trusted: masked from training, never scored 0.
MASKED_VERDICTS = frozenset({"unverifiable", "sandbox_error"})


def rollout_id(group_id: str, sample_index: int) -> str:
    """The canonical rollout id: the broker deduplicates on it, so generators must not invent their own."""
    return f"{group_id}/{sample_index}"
