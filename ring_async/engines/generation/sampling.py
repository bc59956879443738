"""Next-token sampling with vLLM's semantics, batched over rows that each carry their own parameters.

Order of operations (vLLM V1's sampler, without penalties or logit processors): logits in float32; greedy rows
(temperature < 1e-5) take the argmax of the raw logits; other rows divide by their temperature, keep their top-k
logits (ties at the k-th value kept), then keep the smallest set of most likely tokens whose renormalised
probability reaches top_p (at least one), and draw from the softmax of what is left.

Logprobs. ``raw`` (vLLM's default ``logprobs_mode="raw_logprobs"``) reports log_softmax of the model's logits before
temperature, top-k and top-p; ``processed`` (vLLM's ``processed_logprobs``) reports the log-probability under the
distribution the token was actually drawn from. They agree at temperature 1 with top_p 1 and top_k 0 (the RL
default); an importance ratio against a different sampling distribution wants ``processed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ring_async.engines.generation.types import GREEDY_TEMPERATURE, LogprobsMode, SamplingParams


@dataclass
class RowParams:
    """Per-row sampling parameters as tensors, plus flags that let the common case skip the sort."""

    temperature: torch.Tensor  # float32 [rows]; 1.0 on greedy rows (never divided by ~0)
    top_p: torch.Tensor  # float32 [rows]
    top_k: torch.Tensor  # int64 [rows]; 0 = off
    greedy: torch.Tensor  # bool [rows]
    any_greedy: bool
    all_greedy: bool
    any_top_p: bool
    any_top_k: bool
    any_temperature: bool

    @classmethod
    def build(cls, params: list[SamplingParams | None], device: torch.device) -> "RowParams":
        # None marks an empty row: sample it like a plain temperature-1 row and ignore the result.
        greedy = [p is not None and p.greedy for p in params]
        temps = [1.0 if (p is None or g) else p.temperature for p, g in zip(params, greedy)]
        top_p = [1.0 if p is None else p.top_p for p in params]
        top_k = [0 if p is None else p.top_k for p in params]
        live = [p for p in params if p is not None]
        return cls(
            temperature=torch.tensor(temps, dtype=torch.float32, device=device),
            top_p=torch.tensor(top_p, dtype=torch.float32, device=device),
            top_k=torch.tensor(top_k, dtype=torch.int64, device=device),
            greedy=torch.tensor(greedy, dtype=torch.bool, device=device),
            any_greedy=any(greedy),
            all_greedy=bool(live) and all(p.greedy for p in live),
            any_top_p=any(p < 1.0 for p in top_p),
            any_top_k=any(k > 0 for k in top_k),
            any_temperature=any(t != 1.0 for t in temps),
        )


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> torch.Tensor:
    """Set to -inf the logits outside each row's top-k, then outside its top-p nucleus (new tensor)."""
    logits = logits.clone()
    if top_k is not None:
        vocab = logits.shape[-1]
        k = top_k.clamp(min=0, max=vocab)
        k_max = int(k.max())
        if k_max > 0:
            kth = logits.topk(k_max, dim=-1).values.gather(-1, (k.clamp(min=1) - 1).unsqueeze(-1))
            # Rows with k = 0 compare against -inf: nothing is removed.
            kth = torch.where((k > 0).unsqueeze(-1), kth, torch.full_like(kth, float("-inf")))
            logits.masked_fill_(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Keep a token while the mass of the tokens ranked above it is below p: the smallest prefix reaching p.
        mass_above = probs.cumsum(dim=-1) - probs
        remove_sorted = mass_above >= top_p.unsqueeze(-1)
        remove_sorted[:, 0] = False
        remove = torch.zeros_like(remove_sorted).scatter_(-1, order, remove_sorted)
        logits.masked_fill_(remove, float("-inf"))
    return logits


def sample(
    logits: torch.Tensor,
    params: RowParams,
    generator: torch.Generator | None,
    logprobs_mode: LogprobsMode = "raw",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; returns (token ids int64 [rows], logprob of each float32 [rows])."""
    logits = logits.float()
    raw_logprobs = torch.log_softmax(logits, dim=-1)
    if params.all_greedy:
        tokens = logits.argmax(dim=-1)
        return tokens, raw_logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if params.any_temperature or params.any_top_k or params.any_top_p:
        scaled = logits / params.temperature.unsqueeze(-1) if params.any_temperature else logits
        if params.any_top_k or params.any_top_p:
            scaled = apply_top_k_top_p(
                scaled, params.top_k if params.any_top_k else None, params.top_p if params.any_top_p else None
            )
        processed_logprobs = torch.log_softmax(scaled, dim=-1)
    else:
        processed_logprobs = raw_logprobs  # temperature 1, no truncation: the model's own distribution
    probs = processed_logprobs.exp()
    if probs.is_cuda:
        # Exponential race, argmax(p / E) with E ~ Exp(1), draws from p without a host sync (vLLM does the same).
        tokens = (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1)
    else:
        # On the CPU one uniform per row (multinomial) is far cheaper than one exponential per vocabulary entry.
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    if params.any_greedy:
        tokens = torch.where(params.greedy, logits.argmax(dim=-1), tokens)
    source = raw_logprobs if logprobs_mode == "raw" else processed_logprobs
    if logprobs_mode == "processed" and params.any_greedy:
        # A greedy row's processed distribution is its unscaled one (vLLM never divides by a ~0 temperature).
        source = torch.where(params.greedy.unsqueeze(-1), raw_logprobs, source)
    return tokens, source.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


__all__ = ["GREEDY_TEMPERATURE", "RowParams", "apply_top_k_top_p", "sample"]
