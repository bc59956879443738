"""SFT examples: prompt and teacher response as token ids, with the loss on the response only.

The prompt is encoded exactly as generators encode it (:func:`~ring_async.policy.tokenizer.encode_prompt`), so SFT
and RL condition the policy on identical ids; the response ends with eos so the policy learns to stop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ring_async.policy.tokenizer import encode_prompt
from ring_async.tasks.record import TaskRecord

IGNORE_INDEX = -100  # transformers' causal-LM loss skips these labels
# Length grouping: batches are cut from windows of this many batches sorted by length, so padding stays small
# while the order across windows stays random.
WINDOW_BATCHES = 64


@dataclass(frozen=True)
class SftExample:
    input_ids: list[int]
    prompt_tokens: int

    @property
    def response_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_tokens


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, records: Sequence[TaskRecord], max_length: int
) -> tuple[list[SftExample], int]:
    """Examples for the records that carry a teacher response; returns (examples, number skipped as too long)."""
    examples, too_long = [], 0
    eos = tokenizer.eos_token_id
    for record in records:
        if record.response is None:
            continue
        prompt = encode_prompt(tokenizer, record.prompt)
        response = tokenizer.encode(record.response, add_special_tokens=False) + [eos]
        if len(prompt) + len(response) > max_length:
            too_long += 1
            continue
        examples.append(SftExample(prompt + response, len(prompt)))
    return examples, too_long


def epoch_batches(examples: Sequence[SftExample], batch_size: int, rng: random.Random) -> list[list[SftExample]]:
    """One epoch of batches, grouped by length within random windows, in random order."""
    order = list(examples)
    rng.shuffle(order)
    window = batch_size * WINDOW_BATCHES
    batches: list[list[SftExample]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda e: len(e.input_ids))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(batch: Sequence[SftExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; labels are the input ids with prompt and padding masked."""
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        ids = torch.tensor(example.input_ids, dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        labels[row, example.prompt_tokens : len(ids)] = ids[example.prompt_tokens :]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def iterate_steps(
    examples: Sequence[SftExample], batch_size: int, grad_accum: int, epochs: int, seed: int
) -> Iterator[tuple[int, list[list[SftExample]]]]:
    """(epoch, micro-batches of one optimizer step); an epoch's last partial step is dropped."""
    rng = random.Random(f"sft:{seed}")
    for epoch in range(epochs):
        batches = epoch_batches(examples, batch_size, rng)
        for start in range(0, len(batches) - grad_accum + 1, grad_accum):
            yield epoch, batches[start : start + grad_accum]


def steps_per_epoch(examples: int, batch_size: int, grad_accum: int) -> int:
    # Exactly the batches epoch_batches cuts: full windows, then the rest of the last window.
    window = batch_size * WINDOW_BATCHES
    full, rest = divmod(examples, window)
    batches = full * WINDOW_BATCHES + -(-rest // batch_size)
    return batches // grad_accum
