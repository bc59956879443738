"""From a TrainBatch to padded micro-batch tensors: sharding over data-parallel ranks and token-balanced packing.

Every rank sees the whole TrainBatch of the step and computes the same plan, so no rank needs to tell another what
it took: rows are spread over ranks by token count (longest first, each to the least loaded rank), then each rank
packs its rows into micro-batches of at most ``max_tokens`` padded tokens (rows sorted by length, so a micro-batch
pads to its first row). Ranks then run the **same number** of micro-batches: one with fewer pads its plan with
empty micro-batches (a forward whose loss mask is all false). ZeRO-2 reduces gradients in every backward, so unequal
counts would leave a collective waiting forever.

A sequence is ``prompt + response``; the logits at position t score token t+1, so response token j (at position
P+j) is scored at position P+j-1. Tensors are right-padded: the positions of real tokens are the same as without
padding, so the logprobs match a generator's (which is tested against an unpadded forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow.compute as pc
import torch

from ring_async.data.train_batch import TrainBatch


@dataclass(frozen=True)
class BatchRows:
    """The columns of a TrainBatch a learner trains on, as numpy arrays (token lists as flat values + offsets)."""

    prompt_ids: np.ndarray
    prompt_offsets: np.ndarray
    response_ids: np.ndarray
    response_offsets: np.ndarray
    behaviour_logprobs: np.ndarray
    advantages: np.ndarray
    version_first: np.ndarray
    version_last: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.advantages)

    @property
    def prompt_lengths(self) -> np.ndarray:
        return np.diff(self.prompt_offsets)

    @property
    def response_lengths(self) -> np.ndarray:
        return np.diff(self.response_offsets)

    @property
    def lengths(self) -> np.ndarray:
        return self.prompt_lengths + self.response_lengths

    def prompt(self, row: int) -> np.ndarray:
        return self.prompt_ids[self.prompt_offsets[row] : self.prompt_offsets[row + 1]]

    def response(self, row: int) -> np.ndarray:
        return self.response_ids[self.response_offsets[row] : self.response_offsets[row + 1]]

    def behaviour(self, row: int) -> np.ndarray:
        return self.behaviour_logprobs[self.response_offsets[row] : self.response_offsets[row + 1]]

    @classmethod
    def from_train_batch(cls, batch: TrainBatch) -> "BatchRows":
        records = batch.records

        def flat(name: str) -> tuple[np.ndarray, np.ndarray]:
            column = records.column(name)
            lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
            values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
            return values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        prompt_ids, prompt_offsets = flat("prompt_token_ids")
        response_ids, response_offsets = flat("response_token_ids")
        behaviour, _ = flat("behaviour_logprobs")

        def scalars(name: str) -> np.ndarray:
            return records.column(name).to_numpy(zero_copy_only=False)

        return cls(prompt_ids, prompt_offsets, response_ids, response_offsets, behaviour,
                   scalars("advantage"), scalars("policy_version_first"), scalars("policy_version_last"))


def shard_rows(lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Row indices per rank, balanced by token count (longest-processing-time greedy; ties go to the lower rank).

    Deterministic, so every rank computes the same assignment from the same batch.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    load = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for row in sorted(range(len(lengths)), key=lambda r: (-int(lengths[r]), r)):
        rank = min(range(world_size), key=lambda k: (load[k], k))
        shards[rank].append(row)
        load[rank] += int(lengths[row])
    return [sorted(s) for s in shards]


def pack_rows(rows: Sequence[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Pack rows into micro-batches of at most ``max_tokens`` padded tokens (rows × longest row).

    Rows go longest first, so each micro-batch pads to its first row; a row longer than ``max_tokens`` on its own
    still gets a micro-batch of its own (it cannot be split without splitting a sequence).
    """
    order = sorted(rows, key=lambda r: (-int(lengths[r]), r))
    packs: list[list[int]] = []
    for row in order:
        if packs and (len(packs[-1]) + 1) * int(lengths[packs[-1][0]]) <= max_tokens:
            packs[-1].append(row)
        else:
            packs.append([row])
    return packs


def plan_micro_batches(lengths: Sequence[int], world_size: int, max_tokens: int) -> list[list[list[int]]]:
    """``plan[rank]`` = that rank's micro-batches (lists of row indices); every rank has the same count, padded
    with empty micro-batches."""
    packs = [pack_rows(shard, lengths, max_tokens) for shard in shard_rows(lengths, world_size)]
    count = max(max((len(p) for p in packs), default=0), 1)
    return [p + [[] for _ in range(count - len(p))] for p in packs]


@dataclass
class MicroBatch:
    """Padded tensors of one micro-batch. ``loss_mask``, ``targets`` and ``behaviour_logprobs`` are ``[B, L-1]``
    (position t scores token t+1); ``rows`` are the TrainBatch rows it holds (empty for a padding micro-batch)."""

    rows: tuple[int, ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor
    behaviour_logprobs: torch.Tensor
    advantages: torch.Tensor
    version_first: torch.Tensor
    version_last: torch.Tensor

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum()) if self.rows else 0

    def to(self, device: torch.device) -> "MicroBatch":
        moved = {name: getattr(self, name).to(device) for name in _TENSOR_FIELDS}
        return MicroBatch(rows=self.rows, **moved)


_TENSOR_FIELDS = ("input_ids", "attention_mask", "targets", "loss_mask", "behaviour_logprobs", "advantages",
                  "version_first", "version_last")


def collate(data: BatchRows, rows: Sequence[int], pad_id: int) -> MicroBatch:
    """The micro-batch of ``rows``; an empty ``rows`` gives a one-token padding micro-batch with nothing to train
    (it exists so that every rank runs the same number of forwards and backwards)."""
    if not rows:
        one = torch.full((1, 2), pad_id, dtype=torch.long)
        zeros = torch.zeros((1, 1))
        return MicroBatch((), one, torch.ones_like(one), one[:, 1:], torch.zeros((1, 1), dtype=torch.bool), zeros,
                          torch.zeros(1), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    lengths = data.lengths
    width = int(max(lengths[r] for r in rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    behaviour = torch.zeros((len(rows), width - 1), dtype=torch.float32)
    for b, row in enumerate(rows):
        prompt, response = data.prompt(row), data.response(row)
        p, n = len(prompt), len(response)
        input_ids[b, :p] = torch.from_numpy(prompt.astype(np.int64))
        input_ids[b, p : p + n] = torch.from_numpy(response.astype(np.int64))
        attention[b, : p + n] = 1
        loss_mask[b, p - 1 : p + n - 1] = True
        behaviour[b, p - 1 : p + n - 1] = torch.from_numpy(data.behaviour(row).astype(np.float32))
    index = list(rows)
    return MicroBatch(
        rows=tuple(index),
        input_ids=input_ids,
        attention_mask=attention,
        targets=input_ids[:, 1:].clone(),
        loss_mask=loss_mask,
        behaviour_logprobs=behaviour,
        advantages=torch.from_numpy(data.advantages[index].astype(np.float32)),
        version_first=torch.from_numpy(data.version_first[index].astype(np.int64)),
        version_last=torch.from_numpy(data.version_last[index].astype(np.int64)),
    )
