"""Sampling a policy on a probe set and measuring what checkpoint selection needs.

Mean token entropy is the entropy (nats) of the sampling distribution at each generated token, averaged over every
generated token of every sample (token-weighted, as in the paper's entropy curves), up to and including the stop
token. Token efficiency is correct answers per 1,000 generated tokens: two checkpoints with the same accuracy differ
by how much they write to get there.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from ring_async.policy.model import Policy
from ring_async.policy.tokenizer import encode_prompt, stop_token_ids
from ring_async.sft.scoring import Scorer
from ring_async.tasks.record import TaskRecord


@dataclass(frozen=True)
class ProbeResult:
    prompts: int
    samples: int
    mean_entropy: float  # nats per generated token
    accuracy: float | None  # share of scored samples that are correct; None when nothing could be scored
    scored: int
    mean_response_tokens: float
    truncated: float  # share of samples that hit max_new_tokens without stopping
    token_efficiency: float | None  # correct samples per 1,000 generated tokens (scored samples only)
    wall_s: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sample:
    record: TaskRecord
    text: str
    tokens: int
    entropy_sum: float
    stopped: bool


@torch.no_grad()
def sample_responses(
    policy: Policy, records: Sequence[TaskRecord], samples_per_prompt: int = 1, max_new_tokens: int = 128,
    temperature: float = 1.0, seed: int = 0, batch_size: int = 64,
) -> list[Sample]:
    """Sample responses with plain temperature sampling (no top-k/top-p) and record each token's entropy."""
    model, tokenizer = policy.model, policy.tokenizer
    stops = stop_token_ids(tokenizer)
    device = next(model.parameters()).device
    jobs = [record for record in records for _ in range(samples_per_prompt)]
    samples: list[Sample] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            encoded = [encode_prompt(tokenizer, r.prompt) for r in batch]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, ids in enumerate(encoded):  # left padding: every prompt ends where generation starts
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention_mask[row, width - len(ids) :] = 1
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), do_sample=True,
                temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id, output_logits=True, return_dict_in_generate=True,
            )
            generated = out.sequences[:, width:].cpu()
            logits = torch.stack(out.logits, dim=1).float().cpu() / temperature  # (batch, steps, vocab)
            logp = torch.log_softmax(logits, dim=-1)
            entropy = -(logp.exp() * logp).sum(-1)  # (batch, steps)
            for row, record in enumerate(batch):
                ids = generated[row].tolist()
                stop_at = next((i for i, t in enumerate(ids) if t in stops), None)
                length = stop_at + 1 if stop_at is not None else len(ids)
                text = tokenizer.decode(ids[: stop_at if stop_at is not None else length], skip_special_tokens=True)
                samples.append(Sample(record, text, length, float(entropy[row, :length].sum()), stop_at is not None))
    return samples


def probe(
    policy: Policy, records: Sequence[TaskRecord], samples_per_prompt: int = 1, max_new_tokens: int = 128,
    temperature: float = 1.0, seed: int = 0, batch_size: int = 64,
) -> ProbeResult:
    started = time.monotonic()
    samples = sample_responses(policy, records, samples_per_prompt, max_new_tokens, temperature, seed, batch_size)
    tokens = sum(s.tokens for s in samples)
    with Scorer() as scorer:
        scores = [(scorer.score(s.record, s.text), s.tokens) for s in samples]
    scored = [(v, n) for v, n in scores if v is not None]
    correct = sum(v for v, _ in scored)
    scored_tokens = sum(n for _, n in scored)
    return ProbeResult(
        prompts=len(records),
        samples=len(samples),
        mean_entropy=sum(s.entropy_sum for s in samples) / tokens if tokens else math.nan,
        accuracy=correct / len(scored) if scored else None,
        scored=len(scored),
        mean_response_tokens=tokens / len(samples) if samples else math.nan,
        truncated=sum(not s.stopped for s in samples) / len(samples) if samples else math.nan,
        token_efficiency=1000.0 * correct / scored_tokens if scored_tokens else None,
        wall_s=time.monotonic() - started,
    )
