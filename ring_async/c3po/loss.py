"""The C3PO policy loss, and its ``grpo`` / ``token_mean`` comparison modes (DESIGN §2-3).

The centre of this module is one rule: **every loss term is a weighted token sum** ``Σ_t w_t · term_t`` whose
per-token weights ``w_t`` are computed from the *global* batch (the whole TrainBatch of one optimizer step), never
from the micro-batch at hand. Sums are linear, so the losses of any split of the batch into micro-batches and
data-parallel ranks add up to the loss of the whole batch, and so do their gradients: a learner backpropagates each
micro-batch's loss and **sums** gradients over micro-batches and ranks (no 1/world, no 1/grad-accum scaling).

The weights per aggregation mode (``|y_i|`` = loss-bearing tokens of sequence i):

- ``c3po``:       w_t = 1/Φ                       (constant budget, not the number of tokens actually present)
- ``token_mean``: w_t = 1/N_tokens                (N over the global batch)
- ``grpo``:       w_t = 1/(|y_i| · N_sequences)   (per-sequence mean, then mean over the global batch)

A learner builds one :class:`LossNormaliser` per TrainBatch, then calls :func:`policy_loss` per micro-batch.
Tensors are padded ``[B, T]`` with a boolean ``mask`` of loss-bearing tokens; padding never reaches an ``exp``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ring_async.c3po.moe import RouterLosses
    from ring_async.config import AlgorithmConfig
    from ring_async.data.train_batch import TrainBatch

Aggregation = Literal["c3po", "grpo", "token_mean"]
AGGREGATIONS: tuple[str, ...] = ("c3po", "grpo", "token_mean")


# --------------------------------------------------------------------------------------------------------------------
# The global normaliser and the per-token weights
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossNormaliser:
    """The global facts of one optimizer step that the per-token weights depend on.

    ``budget_tokens`` is Φ; ``loss_tokens`` and ``num_sequences`` count the whole TrainBatch over all ranks and
    micro-batches (``num_sequences`` counts only sequences with at least one loss token: an empty response has no
    mean to average in ``grpo``). Compute it once per TrainBatch, identically on every rank.
    """

    aggregation: Aggregation
    budget_tokens: int
    loss_tokens: int
    num_sequences: int

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {self.aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
        if self.budget_tokens <= 0:
            raise ValueError(f"budget_tokens (Φ) must be positive, got {self.budget_tokens}")
        if self.loss_tokens <= 0 or self.num_sequences <= 0:
            raise ValueError(
                f"a step needs loss tokens and sequences, got {self.loss_tokens} tokens in {self.num_sequences} sequences"
            )
        if self.num_sequences > self.loss_tokens:
            raise ValueError(f"{self.num_sequences} non-empty sequences cannot hold only {self.loss_tokens} tokens")

    @classmethod
    def from_lengths(cls, aggregation: Aggregation, budget_tokens: int, lengths: Sequence[int]) -> "LossNormaliser":
        """From the loss-bearing length of every sequence of the global batch."""
        lens = [int(n) for n in lengths]
        if any(n < 0 for n in lens):
            raise ValueError("sequence lengths must be non-negative")
        return cls(aggregation, budget_tokens, sum(lens), sum(1 for n in lens if n > 0))

    @classmethod
    def from_train_batch(cls, batch: "TrainBatch", aggregation: Aggregation) -> "LossNormaliser":
        """From a TrainBatch as the broker emits it: every response token in it carries loss."""
        import pyarrow.compute as pc  # here, so the loss itself needs only torch

        lengths = pc.list_value_length(batch.records.column("response_token_ids")).to_pylist()
        return cls.from_lengths(aggregation, batch.budget_tokens, lengths)


def token_weights(mask: Tensor, normaliser: LossNormaliser, sequence_lengths: Tensor | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-token weights ``w_t`` of a padded micro-batch ``[B, T]`` (zero on padding).

    ``sequence_lengths`` (``[B]``) is only read by ``grpo``: the loss-bearing length of each row's *whole* sequence.
    It defaults to ``mask.sum(-1)``, which is right whenever a sequence is never split across micro-batches; a
    learner that splits one sequence (context parallelism, chunked long responses) must pass the full lengths.
    """
    mask = mask.bool()
    if mask.dim() != 2:
        raise ValueError(f"mask must be [batch, tokens], got shape {tuple(mask.shape)}")
    m = mask.to(dtype)
    if normaliser.aggregation == "c3po":
        return m / normaliser.budget_tokens
    if normaliser.aggregation == "token_mean":
        return m / normaliser.loss_tokens
    lengths = mask.sum(-1) if sequence_lengths is None else sequence_lengths
    if lengths.shape != (mask.shape[0],):
        raise ValueError(f"sequence_lengths must be [{mask.shape[0]}], got shape {tuple(lengths.shape)}")
    # clamp: an all-padding row has no tokens to weight; avoid 0/0 without giving it weight.
    per_row = 1.0 / (lengths.to(dtype).clamp(min=1) * normaliser.num_sequences)
    return m * per_row.unsqueeze(-1)


# --------------------------------------------------------------------------------------------------------------------
# Logprob and entropy helpers for a learner
# --------------------------------------------------------------------------------------------------------------------


def _row_chunks(n: int, chunk_rows: int | None) -> list[slice]:
    step = chunk_rows if chunk_rows and chunk_rows > 0 else max(n, 1)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0, chunk_rows: int | None = None) -> Tensor:
    """log π(tokens[..., t] | ·) from ``logits[..., t, :]`` (already shifted: position t scores token t).

    Computed as ``logit[token] − logsumexp(logits)`` in float32 (float64 stays float64), which never materialises a
    full log-softmax. ``chunk_rows`` bounds the float32 copy of bf16 logits to that many positions at a time; it
    matters most under ``torch.no_grad`` (behaviour/proximal/reference recomputation), where nothing is kept for
    backward. ``temperature`` must match the one the generator sampled with.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(tokens.shape)}")
    flat = logits.reshape(-1, logits.shape[-1])
    ids = tokens.reshape(-1, 1).long()
    out = []
    for rows in _row_chunks(flat.shape[0], chunk_rows):
        z = _upcast(flat[rows]) / temperature
        out.append(z.gather(-1, ids[rows]).squeeze(-1) - torch.logsumexp(z, dim=-1))
    if not out:
        return flat.new_zeros(tokens.shape, dtype=_upcast(flat[:0]).dtype)
    return torch.cat(out).reshape(tokens.shape)


def token_entropy(logits: Tensor, temperature: float = 1.0, chunk_rows: int | None = None) -> Tensor:
    """Entropy H_t = logsumexp(z) − Σ softmax(z)·z of each position's distribution (float32 or float64).

    This form is stable for any logit scale (no log of a probability that underflowed to 0). Differentiable, so
    the same call serves the entropy bonus and the entropy metric.
    """
    flat = logits.reshape(-1, logits.shape[-1])
    out = []
    for rows in _row_chunks(flat.shape[0], chunk_rows):
        z = _upcast(flat[rows]) / temperature
        lse = torch.logsumexp(z, dim=-1)
        out.append(lse - (torch.softmax(z, dim=-1) * z).sum(-1))
    if not out:
        return flat.new_zeros(logits.shape[:-1], dtype=_upcast(flat[:0]).dtype)
    return torch.cat(out).reshape(logits.shape[:-1])


def _upcast(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def k3_kl(logprobs: Tensor, reference_logprobs: Tensor) -> Tensor:
    """The k3 estimator of KL(π ‖ π_ref) per token: exp(ref − logp) − (ref − logp) − 1, always ≥ 0, 0 when equal."""
    d = reference_logprobs - logprobs
    return torch.exp(d) - d - 1


# --------------------------------------------------------------------------------------------------------------------
# Metrics: sums that add up across micro-batches and ranks
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LossMetrics:
    """Detached 0-d tensors, kept on the loss's device so collecting them costs no host sync per micro-batch.

    Every field is a **sum** over the micro-batch except ``importance_weight_max`` (a max). Add the metrics of all
    micro-batches with ``+``, then :meth:`all_reduce` across ranks, then :meth:`summary` for means:

    - ``loss``, ``pg_loss``, ``entropy_bonus``, ``kl_penalty``, ``moe_aux``: this micro-batch's share of each loss
      term, already in global units (``loss = pg_loss + entropy_bonus + kl_penalty + moe_aux``; their sums are the
      step's values). ``entropy_bonus`` is ``−α_ent·Σ w H`` (negative), ``kl_penalty`` is ``β·Σ w KL``.
    - ``entropy_sum``, ``kl_sum``, ``ratio_sum``, ``clipped_tokens``: plain token sums over the tokens that carry loss.
    - ``loss_tokens``: tokens that carry loss; ``masked_tokens``: loss-bearing tokens dropped by the decoupled weight
      cap (``loss_tokens + masked_tokens`` = the batch's mask).
    - ``importance_weight_sum`` / ``_max``: the raw behaviour importance weight exp(prox − behav) over every
      masked-in token (before truncation or masking; 1 in ``none`` mode): a direct read of how off-policy the data is.
    """

    loss: Tensor
    pg_loss: Tensor
    entropy_bonus: Tensor
    kl_penalty: Tensor
    moe_aux: Tensor
    entropy_sum: Tensor
    kl_sum: Tensor
    ratio_sum: Tensor
    clipped_tokens: Tensor
    loss_tokens: Tensor
    masked_tokens: Tensor
    importance_weight_sum: Tensor
    importance_weight_max: Tensor

    _MAX_FIELDS = ("importance_weight_max",)

    def _sum_names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name not in self._MAX_FIELDS]

    def __add__(self, other: "LossMetrics") -> "LossMetrics":
        values = {name: getattr(self, name) + getattr(other, name) for name in self._sum_names()}
        values["importance_weight_max"] = torch.maximum(self.importance_weight_max, other.importance_weight_max)
        return LossMetrics(**values)

    def all_reduce(self, group: object | None = None) -> "LossMetrics":
        """SUM the sums and MAX the max across the ranks of ``group`` (torch.distributed must be initialised)."""
        import torch.distributed as dist

        names = self._sum_names()
        sums = torch.stack([getattr(self, n) for n in names])
        peak = self.importance_weight_max.clone().reshape(1)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
        values = dict(zip(names, sums.unbind(0)))
        values["importance_weight_max"] = peak[0]
        return LossMetrics(**values)

    def summary(self) -> dict[str, float]:
        """Plain floats for logging: the loss terms as they are, token statistics as means over loss tokens."""
        v = {f.name: float(getattr(self, f.name)) for f in fields(self)}
        tokens = max(v["loss_tokens"], 1.0)
        seen = max(v["loss_tokens"] + v["masked_tokens"], 1.0)
        return {
            "loss": v["loss"],
            "pg_loss": v["pg_loss"],
            "entropy_bonus": v["entropy_bonus"],
            "kl_penalty": v["kl_penalty"],
            "moe_aux": v["moe_aux"],
            "entropy": v["entropy_sum"] / tokens,
            "kl": v["kl_sum"] / tokens,
            "ratio_mean": v["ratio_sum"] / tokens,
            "clip_fraction": v["clipped_tokens"] / tokens,
            "importance_weight_mean": v["importance_weight_sum"] / seen,
            "importance_weight_max": v["importance_weight_max"],
            "loss_tokens": v["loss_tokens"],
            "masked_tokens": v["masked_tokens"],
        }


# --------------------------------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PolicyLoss:
    """``loss`` is the scalar to backpropagate (this micro-batch's share of the step loss); ``metrics`` are detached."""

    loss: Tensor
    metrics: LossMetrics


def policy_loss(
    logprobs: Tensor,
    behaviour_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    normaliser: LossNormaliser,
    config: "AlgorithmConfig",
    *,
    proximal_logprobs: Tensor | None = None,
    reference_logprobs: Tensor | None = None,
    entropy: Tensor | None = None,
    router: "RouterLosses | None" = None,
    sequence_lengths: Tensor | None = None,
) -> PolicyLoss:
    """One micro-batch's share of  L = −Σ w·o − α_ent·Σ w·H + β·Σ w·KL + share·(α_bal·LB + α_z·Z).

    Shapes: ``logprobs`` (current policy, with grad), ``behaviour_logprobs`` (generator), ``proximal_logprobs``
    (learner-recomputed at step start, no grad), ``reference_logprobs``, ``entropy`` and ``mask`` are ``[B, T]``;
    ``advantages`` is ``[B]`` (one value per sequence). Per token, with ε = ``clip_eps``:

        o_t = iw_t · min(r_t·A, clip(r_t, 1−ε, 1+ε)·A)

    - ``off_policy='none'``: r = exp(logp − behav), iw = 1 (PPO against the behaviour policy).
    - ``'tis'``: r = exp(logp − prox), iw = min(exp(prox − behav), tis_cap), detached: truncated importance sampling;
      every token keeps contributing, a very off-policy one with weight at most C (biased, bounded variance).
    - ``'decoupled'``: r = exp(logp − prox), iw = exp(prox − behav), detached and *untruncated* (AReaL's decoupled
      PPO: the clip trusts the proximal policy, the weight corrects behaviour → proximal). With
      ``decoupled_weight_cap`` set, tokens whose weight exceeds it are dropped from every loss term instead of being
      truncated: no token is trusted with a weight above the cap, and every kept token keeps its exact weight. The
      normaliser is unchanged, so dropped tokens shrink the step rather than up-weight the rest.

    ``entropy`` is required when ``entropy_coef > 0`` and ``reference_logprobs`` when ``kl_coef > 0``: a configured
    term is never silently skipped. ``router`` (from :func:`ring_async.c3po.moe.router_losses` on this
    micro-batch) is weighted by the micro-batch's share of the step's loss tokens, because those terms are means over
    tokens and not token sums (see ``moe.py``).
    """
    mask = mask.bool()
    dtype = logprobs.dtype
    _check_shapes(logprobs, behaviour_logprobs=behaviour_logprobs, mask=mask, proximal_logprobs=proximal_logprobs,
                  reference_logprobs=reference_logprobs, entropy=entropy)
    if advantages.shape != (logprobs.shape[0],):
        raise ValueError(f"advantages must be [{logprobs.shape[0]}] (one per sequence), got {tuple(advantages.shape)}")

    weights = token_weights(mask, normaliser, sequence_lengths, dtype=dtype)
    adv = advantages.to(dtype).unsqueeze(-1)
    behav = behaviour_logprobs.to(dtype)
    mode = config.off_policy

    # Padding may hold anything (even ±inf): zero the log-differences there before any exp.
    def on_mask(x: Tensor) -> Tensor:
        return torch.where(mask, x, torch.zeros_like(x))

    keep = mask
    if mode == "none":
        log_ratio = on_mask(logprobs - behav)
        raw_weight = on_mask(torch.ones_like(behav))
        iw = torch.ones_like(behav)
    else:
        if proximal_logprobs is None:
            raise ValueError(f"off_policy={mode!r} needs proximal_logprobs (recomputed by the learner at step start)")
        prox = proximal_logprobs.to(dtype).detach()
        log_ratio = on_mask(logprobs - prox)
        raw_weight = on_mask(torch.exp(on_mask(prox - behav)))
        if mode == "tis":
            iw = raw_weight.clamp(max=config.tis_cap)
        elif mode == "decoupled":
            iw = raw_weight
            if config.decoupled_weight_cap is not None:
                keep = mask & (raw_weight <= config.decoupled_weight_cap)
        else:
            raise ValueError(f"unknown off_policy mode {mode!r}")

    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - config.clip_eps, 1.0 + config.clip_eps) * adv
    objective = torch.minimum(unclipped, clipped) * iw
    # The clipped branch is the one taken (and the gradient is zero) exactly where it is strictly smaller.
    clip_active = (clipped < unclipped) & keep

    w = torch.where(keep, weights, torch.zeros_like(weights))
    zero = logprobs.new_zeros(())
    pg_loss = -(w * objective).sum()

    entropy_bonus = zero
    if config.entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the per-token entropy (token_entropy of the logits)")
        entropy_bonus = -config.entropy_coef * (w * on_mask(entropy.to(dtype))).sum()

    kl_penalty = zero
    kl = None
    if reference_logprobs is not None:
        # Both sides zeroed on padding: there ref − logp = 0, hence KL = 0, whatever the padding holds.
        kl = k3_kl(on_mask(logprobs), on_mask(reference_logprobs.to(dtype).detach()))
    if config.kl_coef > 0:
        if kl is None:
            raise ValueError("kl_coef > 0 needs reference_logprobs (from the frozen reference model)")
        kl_penalty = config.kl_coef * (w * kl).sum()

    moe_aux = zero
    if router is not None:
        share = mask.sum().to(dtype) / normaliser.loss_tokens
        moe_aux = share * (config.load_balance_coef * router.load_balance + config.router_z_coef * router.z_loss)

    loss = pg_loss + entropy_bonus + kl_penalty + moe_aux

    def d(x: Tensor) -> Tensor:
        return x.detach().to(torch.float64)

    keep_f = keep.to(torch.float64)
    metrics = LossMetrics(
        loss=d(loss),
        pg_loss=d(pg_loss),
        entropy_bonus=d(entropy_bonus),
        kl_penalty=d(kl_penalty),
        moe_aux=d(moe_aux),
        entropy_sum=(d(on_mask(entropy)) * keep_f).sum() if entropy is not None else d(zero),
        kl_sum=(d(kl) * keep_f).sum() if kl is not None else d(zero),
        ratio_sum=(d(ratio) * keep_f).sum(),
        clipped_tokens=clip_active.sum().to(torch.float64),
        loss_tokens=keep_f.sum(),
        masked_tokens=(mask & ~keep).sum().to(torch.float64),
        importance_weight_sum=d(raw_weight).sum(),
        importance_weight_max=d(raw_weight).max() if raw_weight.numel() else d(zero),
    )
    return PolicyLoss(loss=loss, metrics=metrics)


def _check_shapes(logprobs: Tensor, **others: Tensor | None) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [batch, tokens], got shape {tuple(logprobs.shape)}")
    for name, t in others.items():
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(logprobs.shape)} like logprobs")
