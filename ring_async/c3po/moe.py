"""MoE router auxiliary losses: Switch/GShard load balance and the ST-MoE router z-loss (DESIGN §2).

Input is what a Hugging Face MoE causal LM returns with ``output_router_logits=True``: a tuple with one tensor of
router logits per MoE layer, each ``[tokens, num_experts]`` where tokens = batch × sequence (``[batch, seq, E]`` is
accepted too), and the ``[batch, seq]`` attention mask of the forward pass so padding is left out. Every real token
the model routed counts (prompt and response alike: routing balance concerns all the tokens the experts process).

- Load balance, per layer: ``E · Σ_e f_e · P_e`` where ``f_e`` is the fraction of the layer's top-k routing
  assignments that go to expert e (tokens × k assignments in all, so Σ_e f_e = 1) and ``P_e`` the mean router
  probability of e. Perfectly uniform routing gives exactly 1.0 for any k; everything on one expert gives E.
  (Hugging Face's ``load_balancing_loss_func`` does not divide the assignments by k, so its value is k times this
  one, and it pools the layers before multiplying; here each layer is scored on its own and the layers averaged.)
- Router z-loss, per layer: the mean over tokens of ``logsumexp(router_logits)²``; layers averaged.

**These are not token sums.** A product of two means (load balance) and a mean of squares over the micro-batch's
tokens cannot be split into per-token weights the way the policy loss is, so they are computed per micro-batch and
:func:`ring_async.c3po.loss.policy_loss` weights each micro-batch's value by its share of the step's loss tokens.
Summed over micro-batches and ranks that is a token-weighted average of per-micro-batch values: exactly the
single-batch value when there is one micro-batch, and otherwise the usual approximation every data-parallel MoE
trainer makes (the gradient of balance measured where the routing happened).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


@dataclass
class RouterLosses:
    """Layer-averaged router losses of one micro-batch, differentiable; pass to ``policy_loss(router=...)``."""

    load_balance: Tensor
    z_loss: Tensor


def _layers(router_logits: Sequence[Tensor | None], attention_mask: Tensor | None) -> list[Tensor]:
    """Each layer's logits as ``[real tokens, E]`` in float32 (or float64), padding rows dropped."""
    # Some HF models leave None for dense layers between MoE layers.
    layers = [t for t in router_logits if t is not None]
    if not layers:
        raise ValueError("no router logits: the model has no MoE layer, or output_router_logits was not set")
    keep = None if attention_mask is None else attention_mask.reshape(-1).bool()
    out = []
    for i, logits in enumerate(layers):
        if logits.shape[-1] != layers[0].shape[-1]:
            raise ValueError(f"layer {i} has {logits.shape[-1]} experts, layer 0 has {layers[0].shape[-1]}")
        flat = logits.reshape(-1, logits.shape[-1])
        if flat.dtype != torch.float64:
            flat = flat.float()  # softmax/logsumexp of bf16 router logits lose the small differences that matter
        if keep is not None:
            if keep.shape[0] != flat.shape[0]:
                raise ValueError(
                    f"router logits of layer {i} have {flat.shape[0]} tokens but the attention mask has {keep.shape[0]}"
                )
            flat = flat[keep]
        out.append(flat)
    if out[0].shape[0] == 0:
        raise ValueError("the attention mask leaves no token to route")
    return out


def load_balance_loss(router_logits: Sequence[Tensor | None], attention_mask: Tensor | None, top_k: int) -> Tensor:
    """Switch/GShard load balance ``E · Σ_e f_e · P_e``, per layer, averaged over layers (1.0 = perfectly uniform)."""
    return _load_balance(_layers(router_logits, attention_mask), top_k)


def router_z_loss(router_logits: Sequence[Tensor | None], attention_mask: Tensor | None) -> Tensor:
    """ST-MoE z-loss: mean over real tokens of ``logsumexp(router logits)²``, per layer, averaged over layers."""
    return _z_loss(_layers(router_logits, attention_mask))


def _load_balance(layers: list[Tensor], top_k: int) -> Tensor:
    num_experts = layers[0].shape[-1]
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be in [1, {num_experts}], got {top_k}")
    per_layer = []
    for logits in layers:
        probs = torch.softmax(logits, dim=-1)
        chosen = torch.topk(probs, top_k, dim=-1).indices
        # f_e is a count (no gradient, as in Switch): only P_e carries the gradient that spreads the routing.
        counts = torch.zeros(num_experts, dtype=probs.dtype, device=probs.device)
        counts.scatter_add_(0, chosen.reshape(-1), torch.ones(chosen.numel(), dtype=probs.dtype, device=probs.device))
        fraction = counts / chosen.numel()
        per_layer.append(num_experts * (fraction * probs.mean(0)).sum())
    return torch.stack(per_layer).mean()


def _z_loss(layers: list[Tensor]) -> Tensor:
    return torch.stack([torch.logsumexp(logits, dim=-1).square().mean() for logits in layers]).mean()


def router_losses(router_logits: Sequence[Tensor | None], attention_mask: Tensor | None, top_k: int) -> RouterLosses:
    """Both router losses of one micro-batch's forward pass (``top_k`` = the model's ``num_experts_per_tok``)."""
    layers = _layers(router_logits, attention_mask)
    return RouterLosses(load_balance=_load_balance(layers, top_k), z_loss=_z_loss(layers))
