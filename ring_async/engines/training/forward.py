"""One micro-batch through the policy: logprobs, entropy, reference logprobs, router losses, then the C3PO loss.

Logits are only upcast at the loss-bearing positions (response tokens): the prompt's positions never reach a
softmax, which matters with real vocabularies (150k × prompt length of float32 per row otherwise).

The proximal policy of decoupled PPO / truncated IS is the policy at the start of the step. A learner takes exactly
one optimizer step per TrainBatch, so every micro-batch's forward already runs with the step-start weights: the
proximal logprobs are this forward's own, detached, and no second forward is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ring_async.c3po.loss import LossNormaliser, PolicyLoss, policy_loss, token_entropy, token_logprobs
from ring_async.c3po.moe import router_losses
from ring_async.config import AlgorithmConfig
from ring_async.engines.training.micro_batches import MicroBatch


@dataclass
class MicroBatchResult:
    loss: PolicyLoss
    logprobs: Tensor  # [B, L-1] detached, zero off the loss mask


def _at_mask(values: Tensor, mask: Tensor) -> Tensor:
    """Scatter per-token values of the masked positions back into a ``[B, T]`` tensor (zeros elsewhere)."""
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


def micro_batch_loss(
    model: torch.nn.Module,
    batch: MicroBatch,
    normaliser: LossNormaliser,
    algorithm: AlgorithmConfig,
    *,
    temperature: float = 1.0,
    reference: torch.nn.Module | None = None,
    moe_top_k: int | None = None,
    chunk_rows: int | None = None,
) -> MicroBatchResult:
    """This micro-batch's share of the step loss (see :func:`ring_async.c3po.loss.policy_loss`); backpropagate
    ``result.loss.loss`` and sum over micro-batches and ranks. ``moe_top_k`` set: the model is MoE and its router
    losses are added."""
    mask = batch.loss_mask
    want_router = moe_top_k is not None and (algorithm.load_balance_coef > 0 or algorithm.router_z_coef > 0)
    extra = {"output_router_logits": True} if want_router else {}
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **extra)
    picked = out.logits[:, :-1][mask]
    targets = batch.targets[mask]
    logprobs = _at_mask(token_logprobs(picked, targets, temperature, chunk_rows), mask)

    if algorithm.entropy_coef > 0:
        entropy = _at_mask(token_entropy(picked, temperature, chunk_rows), mask)
    else:  # still reported as a metric, without a graph
        with torch.no_grad():
            entropy = _at_mask(token_entropy(picked.detach(), temperature, chunk_rows), mask)

    reference_logprobs = None
    if reference is not None:
        with torch.no_grad():
            ref_out = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            ref_picked = ref_out.logits[:, :-1][mask]
            reference_logprobs = _at_mask(token_logprobs(ref_picked, targets, temperature, chunk_rows), mask)

    router = router_losses(out.router_logits, batch.attention_mask, moe_top_k) if want_router else None
    proximal = logprobs.detach() if algorithm.off_policy != "none" else None
    loss = policy_loss(
        logprobs, batch.behaviour_logprobs.to(logprobs.dtype), batch.advantages, mask, normaliser, algorithm,
        proximal_logprobs=proximal, reference_logprobs=reference_logprobs, entropy=entropy, router=router,
    )
    if not mask.any():
        # A padding micro-batch: keep every parameter in the graph (with gradient 0) so that its backward runs
        # the same gradient hooks and collectives as the other ranks' real micro-batches.
        loss.loss = loss.loss + 0.0 * out.logits.sum()
    return MicroBatchResult(loss=loss, logprobs=logprobs.detach())
