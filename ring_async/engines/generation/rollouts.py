"""Between the data plane and the engines: leased ``prompt_group`` rows in, Arrow ``rollout`` batches out.

A verifier receives rollouts only (``Verifier.Verify``), so what it needs to score one travels in the rollout's
msgpack ``metadata`` map next to the prompt's own metadata: ``answer`` and ``tests`` from the prompt group, and
``response_text`` (the decoded response) when the generator has a tokenizer.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import msgpack
import pyarrow as pa

from ring_async.data import codec
from ring_async.data.schemas import PROMPT_GROUP, ROLLOUT
from ring_async.engines.generation.errors import RequestError
from ring_async.engines.generation.types import CompletedSample, GroupRequest, SamplingParams

PENDING_VERDICT = "pending"

Tokenize = Callable[[str], Sequence[int]]


def chat_tokenizer(tokenizer) -> Tokenize:
    """The policy's prompt encoding (chat template, as SFT trained on), for prompt groups that carry only text."""
    from ring_async.policy.tokenizer import encode_prompt

    return lambda prompt: encode_prompt(tokenizer, prompt)


def requests_from_prompt_groups(
    groups: pa.RecordBatch, sampling: SamplingParams, tokenize: Tokenize | None = None
) -> list[GroupRequest]:
    """One request per leased group: its ``group_size`` is K, its token ids are used as given, or ``tokenize`` turns
    its text into them (a group with neither is refused)."""
    codec.check_batch(groups, PROMPT_GROUP)
    rows = codec.iter_rows(
        groups,
        ("group_id", "prompt_id", "prompt", "prompt_token_ids", "reward_type", "answer", "tests", "group_size", "metadata"),
    )
    requests = []
    for group_id, prompt_id, prompt, token_ids, reward_type, answer, tests, group_size, metadata in rows:
        if not token_ids:
            if tokenize is None:
                raise RequestError(f"group {group_id}: the prompt has no token ids and the generator has no tokenizer")
            token_ids = list(tokenize(prompt))
        requests.append(
            GroupRequest(
                group_id=group_id,
                prompt_id=prompt_id,
                prompt_token_ids=tuple(token_ids),
                sampling=dataclasses.replace(sampling, n=int(group_size)),
                reward_type=reward_type,
                metadata=merge_metadata(metadata, answer=answer, tests=tests),
            )
        )
    return requests


def merge_metadata(raw: bytes | None, **fields) -> bytes | None:
    """The prompt's msgpack metadata map with ``fields`` added (None values left out). Metadata that is not a
    msgpack map is kept whole under ``prompt_metadata``."""
    merged: dict = {}
    if raw:
        try:
            decoded = msgpack.unpackb(raw, raw=False)
        except (ValueError, msgpack.UnpackException, TypeError):
            decoded = None
        merged = dict(decoded) if isinstance(decoded, dict) else {"prompt_metadata": bytes(raw)}
    merged.update({key: value for key, value in fields.items() if value is not None})
    return msgpack.packb(merged, use_bin_type=True) if merged else None


def samples_to_rollouts(samples: Sequence[CompletedSample], tokenizer=None) -> pa.RecordBatch:
    """Finished samples as a ``rollout`` batch, unscored: reward null and verdict "pending" until a verifier
    fills them in. With ``tokenizer`` each row's metadata also carries its ``response_text``."""
    if tokenizer is not None:
        metadata = [merge_metadata(s.metadata, response_text=response_text(s, tokenizer)) for s in samples]
    else:
        metadata = [s.metadata for s in samples]
    return codec.build_batch(
        ROLLOUT,
        {
            "rollout_id": [s.rollout_id for s in samples],
            "group_id": [s.group_id for s in samples],
            "prompt_id": [s.prompt_id for s in samples],
            "sample_index": [s.sample_index for s in samples],
            "prompt_token_ids": codec.token_list_array([s.prompt_token_ids for s in samples]),
            "response_token_ids": codec.token_list_array([s.token_ids for s in samples]),
            "behaviour_logprobs": codec.token_list_array([s.logprobs for s in samples], pa.float32()),
            "policy_version_first": [s.policy_version_first for s in samples],
            "policy_version_last": [s.policy_version_last for s in samples],
            "finish_reason": [s.finish_reason for s in samples],
            "reward_type": [s.reward_type for s in samples],
            "verdict": [PENDING_VERDICT] * len(samples),
            "generation_s": [s.generation_s for s in samples],
            "verification_s": [0.0] * len(samples),
            "completed_at": [s.completed_at for s in samples],
            "metadata": metadata,
        },
    )


def response_text(sample: CompletedSample, tokenizer) -> str:
    """The response as text: what the stop-string check saw when it ran, else a fresh decode (special tokens
    such as eos left out, as vLLM does)."""
    if sample.text is not None:
        return sample.text
    return tokenizer.decode(sample.token_ids.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False)
