"""The C3PO policy loss and the MoE router losses, checked against numbers worked out by hand."""

import math

import pytest
import torch

from ring_async.c3po.loss import (
    LossMetrics,
    LossNormaliser,
    k3_kl,
    policy_loss,
    token_entropy,
    token_logprobs,
    token_weights,
)
from ring_async.c3po.moe import RouterLosses, load_balance_loss, router_losses, router_z_loss
from ring_async.config import AlgorithmConfig
from ring_async.data import codec
from ring_async.data.schemas import TRAIN_BATCH
from ring_async.data.train_batch import TrainBatch

F64 = torch.float64
LN2 = math.log(2.0)


def algo(**kw) -> AlgorithmConfig:
    """Only the policy-gradient term unless a test turns the others on."""
    return AlgorithmConfig(**{"entropy_coef": 0.0, "kl_coef": 0.0, **kw})


def norm(aggregation, budget, lengths) -> LossNormaliser:
    return LossNormaliser.from_lengths(aggregation, budget, lengths)


def ratios_to_logprobs(ratios, behaviour=-1.0):
    """Current logprobs (a leaf with grad) whose ratio to a constant behaviour logprob is ``ratios``."""
    r = torch.tensor(ratios, dtype=F64)
    behav = torch.full_like(r, behaviour)
    return (behav + r.log()).requires_grad_(), behav


# ---------------------------------------------------------------------------------------------- the three aggregations

# Two sequences, padded to 4 tokens, every ratio inside [0.8, 1.2] so nothing clips:
#   seq 0: A = +1,   ratios [1.0, 1.1, 0.9]      -> o = [1.0, 1.1, 0.9]          Σ = 3.0, mean = 1.0
#   seq 1: A = -0.5, ratios [1.0, 1.1, 0.9, 1.0] -> o = [-0.5, -0.55, -0.45, -0.5] Σ = -2.0, mean = -0.5
# 7 loss tokens, 2 sequences.
#   c3po, Φ = 10:  L = -(3.0 - 2.0) / 10        = -0.1
#   token_mean:    L = -(3.0 - 2.0) / 7         = -1/7
#   grpo:          L = -(1.0 + (-0.5)) / 2      = -0.25
HAND = {"c3po": -0.1, "token_mean": -1.0 / 7.0, "grpo": -0.25}


def _two_sequences():
    logp, behav = ratios_to_logprobs([[1.0, 1.1, 0.9, 1.0], [1.0, 1.1, 0.9, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    # Padding holds garbage a learner might leave there: it must not leak (no inf·0 = nan, no gradient).
    with torch.no_grad():
        logp[0, 3] = 50.0
    behav[0, 3] = -math.inf
    return logp, behav, torch.tensor([1.0, -0.5]), mask


@pytest.mark.parametrize("aggregation", ["c3po", "token_mean", "grpo"])
def test_aggregations_match_hand_computed_losses_and_gradients(aggregation):
    logp, behav, adv, mask = _two_sequences()
    out = policy_loss(logp, behav, adv, mask, norm(aggregation, 10, [3, 4]), algo())
    assert out.loss.item() == pytest.approx(HAND[aggregation], abs=1e-12)
    out.loss.backward()
    # In the unclipped region dL/dlogp_t = -w_t · r_t · A, with the weights of each mode:
    #   c3po: w = 1/10 everywhere; token_mean: w = 1/7; grpo: w = 1/(3·2) on seq 0 and 1/(4·2) on seq 1.
    w = {"c3po": (0.1, 0.1), "token_mean": (1 / 7, 1 / 7), "grpo": (1 / 6, 1 / 8)}[aggregation]
    r = torch.tensor([1.0, 1.1, 0.9, 1.0], dtype=F64)
    expected = torch.stack([-w[0] * r * 1.0, -w[1] * r * -0.5])
    expected[0, 3] = 0.0  # padding
    assert torch.allclose(logp.grad, expected, atol=1e-12)
    m = out.metrics.summary()
    assert m["loss_tokens"] == 7 and m["clip_fraction"] == 0 and m["masked_tokens"] == 0
    assert m["ratio_mean"] == pytest.approx((3.0 + 4.0) / 7)  # (1.0+1.1+0.9) + (1.0+1.1+0.9+1.0) over 7 tokens


def test_c3po_divides_by_the_budget_not_the_token_count():
    # 7 tokens, all with ratio 1 and A = 1: Σ o = 7.
    logp, behav = ratios_to_logprobs([[1.0] * 7])
    mask = torch.ones(1, 7, dtype=torch.bool)
    adv = torch.tensor([1.0])
    assert policy_loss(logp, behav, adv, mask, norm("c3po", 10, [7]), algo()).loss.item() == pytest.approx(-7 / 10)
    assert policy_loss(logp, behav, adv, mask, norm("token_mean", 10, [7]), algo()).loss.item() == pytest.approx(-1.0)
    # cut='whole' can overshoot Φ: still ÷Φ (7 tokens, Φ = 5 -> -7/5).
    assert policy_loss(logp, behav, adv, mask, norm("c3po", 5, [7]), algo()).loss.item() == pytest.approx(-7 / 5)


def test_token_weights_for_each_mode():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    c3po = token_weights(mask, norm("c3po", 10, [2, 3]))
    assert torch.equal(c3po, mask.float() / 10)
    grpo = token_weights(mask, norm("grpo", 10, [2, 3]))
    assert torch.allclose(grpo, torch.tensor([[1 / 4, 1 / 4, 0], [1 / 6, 1 / 6, 1 / 6]]))
    # A sequence split across micro-batches keeps its full length: 2 of its 5 tokens here, each weighs 1/(5·2).
    split = token_weights(mask[:1], norm("grpo", 10, [5, 3]), sequence_lengths=torch.tensor([5]))
    assert torch.allclose(split, torch.tensor([[1 / 10, 1 / 10, 0]]))


def test_normaliser_from_lengths_and_from_a_train_batch():
    n = LossNormaliser.from_lengths("grpo", 8, [3, 0, 5])
    assert (n.loss_tokens, n.num_sequences) == (8, 2)  # the empty response is no sequence to average over
    records = codec.build_batch(TRAIN_BATCH, {
        "rollout_id": ["g/0", "g/1"], "group_id": ["g", "g"], "prompt_id": ["p", "p"],
        "prompt_token_ids": [[1], [1]], "response_token_ids": [[5, 6, 7], [8, 9, 10, 11, 12]],
        "behaviour_logprobs": [[-1.0] * 3, [-1.0] * 5], "advantage": [1.0, -1.0], "reward": [1.0, 0.0],
        "policy_version_first": [0, 0], "policy_version_last": [0, 0], "full_response_tokens": [3, 9],
    })
    batch = TrainBatch(step_id=0, budget_tokens=8, cut="exact", policy_version=0, records=records)
    assert LossNormaliser.from_train_batch(batch, "c3po") == LossNormaliser("c3po", 8, 8, 2)
    with pytest.raises(ValueError, match="aggregation"):
        LossNormaliser("mean", 8, 8, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        LossNormaliser("c3po", 0, 8, 2)


# ------------------------------------------------------------------------------------------------------------ clipping


def test_clipping_on_both_sides_zeroes_the_gradient_and_is_counted():
    # ε = 0.2, Φ = 4 (w = 1/4).
    #   A = +1, r = 1.5: min(1.5, 1.2) = 1.2    clipped, no gradient
    #   A = +1, r = 0.5: min(0.5, 0.8) = 0.5    unclipped (PPO does not clip a falling ratio of a good token)
    #   A = -1, r = 0.5: min(-0.5, -0.8) = -0.8 clipped, no gradient
    #   A = -1, r = 1.5: min(-1.5, -1.2) = -1.5 unclipped
    # Σ o = 1.2 + 0.5 - 0.8 - 1.5 = -0.6  ->  L = 0.6 / 4 = 0.15
    logp, behav = ratios_to_logprobs([[1.5, 0.5], [0.5, 1.5]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    out = policy_loss(logp, behav, torch.tensor([1.0, -1.0]), mask, norm("c3po", 4, [2, 2]), algo(clip_eps=0.2))
    assert out.loss.item() == pytest.approx(0.15)
    out.loss.backward()
    # Unclipped: -w · r · A -> -0.25·0.5·1 = -0.125 and -0.25·1.5·(-1) = 0.375.
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.125], [0.0, 0.375]], dtype=F64))
    assert out.metrics.clipped_tokens.item() == 2
    assert out.metrics.summary()["clip_fraction"] == 0.5


# ------------------------------------------------------------------------------------------------------- KL and entropy


def test_k3_kl_is_non_negative_and_zero_when_equal():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g, dtype=F64) * 5, torch.randn(1000, generator=g, dtype=F64) * 5
    assert (k3_kl(a, b) >= 0).all()
    assert torch.equal(k3_kl(a, a), torch.zeros_like(a))
    # ref - logp = ln 2: 2 - ln 2 - 1 = 1 - ln 2.
    assert k3_kl(torch.tensor([0.0]), torch.tensor([LN2])).item() == pytest.approx(1 - LN2)


def test_kl_penalty_hand_computed():
    # A = 0 (no policy-gradient term), β = 0.5, Φ = 4, two tokens with ref - logp = ln 2:
    #   KL_t = 1 - ln 2;  L = 0.5 · (1/4) · 2 · (1 - ln 2)
    #   dKL/dlogp = 1 - exp(ref - logp) = 1 - 2 = -1   ->  dL/dlogp = 0.5 · (1/4) · (-1) = -0.125
    logp = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    ref = torch.full((1, 2), LN2, dtype=F64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = policy_loss(logp, logp.detach(), torch.zeros(1), mask, norm("c3po", 4, [2]), algo(kl_coef=0.5),
                      reference_logprobs=ref)
    assert out.loss.item() == pytest.approx(0.5 * 0.25 * 2 * (1 - LN2))
    assert out.metrics.kl_sum.item() == pytest.approx(2 * (1 - LN2))
    out.loss.backward()
    assert torch.allclose(logp.grad, torch.full((1, 2), -0.125, dtype=F64))
    same = policy_loss(logp, logp.detach(), torch.zeros(1), mask, norm("c3po", 4, [2]), algo(kl_coef=0.5),
                       reference_logprobs=logp.detach())
    assert same.loss.item() == 0.0
    with pytest.raises(ValueError, match="reference_logprobs"):
        policy_loss(logp, logp.detach(), torch.zeros(1), mask, norm("c3po", 4, [2]), algo(kl_coef=0.5))


def test_entropy_bonus_is_subtracted_so_descending_the_loss_raises_entropy():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(1, 3, 6, generator=g, dtype=F64) * 3).requires_grad_()
    tokens = torch.tensor([[0, 1, 2]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    logp = token_logprobs(logits, tokens)
    ent = token_entropy(logits)
    # A = 0: only the bonus, L = -α · Σ H / Φ < 0.
    out = policy_loss(logp, logp.detach(), torch.zeros(1), mask, norm("c3po", 3, [3]), algo(entropy_coef=0.1),
                      entropy=ent)
    assert out.loss.item() == pytest.approx(-0.1 * ent.sum().item() / 3)
    assert out.metrics.entropy_bonus.item() < 0
    assert out.metrics.summary()["entropy"] == pytest.approx(ent.mean().item())
    out.loss.backward()
    with torch.no_grad():
        after = token_entropy(logits - 1.0 * logits.grad)
    assert after.sum() > ent.sum()
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, logp.detach(), torch.zeros(1), mask, norm("c3po", 3, [3]), algo(entropy_coef=0.1))


# ---------------------------------------------------------------------------------------------------------- off-policy


def _stale_tokens(weights):
    """logp = prox (ratio 1 against the proximal policy); behaviour such that exp(prox - behav) = weights."""
    prox = torch.full((1, len(weights)), -1.0, dtype=F64)
    behav = prox - torch.tensor([weights], dtype=F64).log()
    return prox.clone().requires_grad_(), behav, prox


def test_tis_truncates_the_importance_weight():
    # Weights exp(prox - behav) = [3, 0.5], C = 2 -> applied [2, 0.5]; A = 1, ratio 1, Φ = 2:
    #   L = -(2·1 + 0.5·1) / 2 = -1.25;  dL/dlogp = -w·iw = [-0.5·2, -0.5·0.5] = [-1, -0.25]
    logp, behav, prox = _stale_tokens([3.0, 0.5])
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = policy_loss(logp, behav, torch.ones(1), mask, norm("c3po", 2, [2]), algo(off_policy="tis", tis_cap=2.0),
                      proximal_logprobs=prox)
    assert out.loss.item() == pytest.approx(-1.25)
    out.loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.0, -0.25]], dtype=F64))
    m = out.metrics.summary()
    assert m["ratio_mean"] == pytest.approx(1.0)  # the ratio is taken against prox, not behaviour
    assert m["importance_weight_mean"] == pytest.approx(1.75) and m["importance_weight_max"] == pytest.approx(3.0)
    assert m["masked_tokens"] == 0
    # The same tokens without correction: ratios [3, 0.5] against behaviour clip to [1.2, 0.5] -> L = -1.7 / 2.
    plain = policy_loss(logp, behav, torch.ones(1), mask, norm("c3po", 2, [2]), algo())
    assert plain.loss.item() == pytest.approx(-0.85)
    with pytest.raises(ValueError, match="proximal_logprobs"):
        policy_loss(logp, behav, torch.ones(1), mask, norm("c3po", 2, [2]), algo(off_policy="tis"))


def test_decoupled_weights_untruncated_and_masks_above_the_cap():
    # Weights [3, 0.5, 1.5], ratio 1, A = 1, Φ = 3.
    #   decoupled, no cap: L = -(3 + 0.5 + 1.5) / 3 = -5/3
    #   decoupled, cap 2:  token 0 leaves the loss: L = -(0.5 + 1.5) / 3 = -2/3 (still ÷Φ), its gradient is 0
    #   tis, C = 2:        token 0 is kept, truncated: L = -(2 + 0.5 + 1.5) / 3 = -4/3
    mask = torch.ones(1, 3, dtype=torch.bool)
    n = norm("c3po", 3, [3])

    def run(**kw):
        logp, behav, prox = _stale_tokens([3.0, 0.5, 1.5])
        return logp, policy_loss(logp, behav, torch.ones(1), mask, n, algo(**kw), proximal_logprobs=prox)

    _, free = run(off_policy="decoupled")
    assert free.loss.item() == pytest.approx(-5 / 3)
    logp, capped = run(off_policy="decoupled", decoupled_weight_cap=2.0)
    assert capped.loss.item() == pytest.approx(-2 / 3)
    capped.loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.5 / 3, -1.5 / 3]], dtype=F64))
    m = capped.metrics.summary()
    assert (m["masked_tokens"], m["loss_tokens"]) == (1, 2)
    _, tis = run(off_policy="tis", tis_cap=2.0)
    assert tis.loss.item() == pytest.approx(-4 / 3)


def test_decoupled_clips_against_the_proximal_policy():
    # Weight 1.5, current/proximal ratio 1.5 > 1.2 with A = 1: o = 1.5 · min(1.5, 1.2) = 1.8, no gradient.
    _, behav, prox = _stale_tokens([1.5])
    logp = (prox + math.log(1.5)).requires_grad_()
    out = policy_loss(logp, behav, torch.ones(1), torch.ones(1, 1, dtype=torch.bool), norm("c3po", 1, [1]),
                      algo(off_policy="decoupled"), proximal_logprobs=prox)
    assert out.loss.item() == pytest.approx(-1.8)
    out.loss.backward()
    assert logp.grad.abs().max() == 0 and out.metrics.clipped_tokens.item() == 1


# ------------------------------------------------------------------------------- micro-batches add up to the batch


def _tiny_lm(seed=0, batch=8, seq=6, dim=5, vocab=7):
    """Random features under a linear LM head; the behaviour, proximal and reference policies are perturbed heads."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, dim, generator=g, dtype=F64)
    head = torch.randn(dim, vocab, generator=g, dtype=F64)
    tokens = torch.randint(0, vocab, (batch, seq), generator=g)
    lengths = torch.tensor([1, 6, 3, 5, 2, 6, 4, 3])[:batch]
    mask = torch.arange(seq) < lengths.unsqueeze(-1)
    with torch.no_grad():
        others = {
            name: token_logprobs(x @ (head + scale * torch.randn(dim, vocab, generator=g, dtype=F64)), tokens)
            for name, scale in (("behaviour", 0.3), ("proximal", 0.15), ("reference", 0.2))
        }
    adv = torch.randn(batch, generator=g, dtype=F64)
    return x, head, tokens, mask, lengths, adv, others


def _loss_on(rows, x, head, tokens, mask, adv, others, normaliser, config):
    """One micro-batch: the rows given, trimmed to their own longest sequence (micro-batches pad differently)."""
    width = int(mask[rows].sum(-1).max())
    logits = x[rows, :width] @ head
    logp = token_logprobs(logits, tokens[rows, :width])
    return policy_loss(
        logp, others["behaviour"][rows, :width], adv[rows], mask[rows, :width], normaliser, config,
        proximal_logprobs=None if config.off_policy == "none" else others["proximal"][rows, :width],
        reference_logprobs=others["reference"][rows, :width], entropy=token_entropy(logits),
    )


@pytest.mark.parametrize("off_policy", ["none", "tis", "decoupled"])
@pytest.mark.parametrize("aggregation", ["c3po", "token_mean", "grpo"])
def test_four_micro_batches_give_the_single_batch_gradient(aggregation, off_policy):
    x, head, tokens, mask, lengths, adv, others = _tiny_lm()
    normaliser = LossNormaliser.from_lengths(aggregation, 40, lengths.tolist())  # 30 tokens, Φ = 40
    config = AlgorithmConfig(aggregation=aggregation, off_policy=off_policy, entropy_coef=0.01, kl_coef=0.1,
                             tis_cap=1.5, decoupled_weight_cap=1.5)

    w_full = head.clone().requires_grad_()
    full = _loss_on(slice(None), x, w_full, tokens, mask, adv, others, normaliser, config)
    full.loss.backward()
    # The example really exercises clipping and (decoupled) masking.
    assert full.metrics.clipped_tokens.item() > 0
    if off_policy == "decoupled":
        assert full.metrics.masked_tokens.item() > 0

    w_micro = head.clone().requires_grad_()
    total, metrics = 0.0, None
    for rows in (slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)):
        part = _loss_on(rows, x, w_micro, tokens, mask, adv, others, normaliser, config)
        part.loss.backward()  # gradients accumulate: a sum, no 1/4
        total += part.loss.item()
        metrics = part.metrics if metrics is None else metrics + part.metrics

    assert total == pytest.approx(full.loss.item(), abs=1e-12)
    assert torch.allclose(w_micro.grad, w_full.grad, rtol=1e-10, atol=1e-12)
    for name, value in vars(full.metrics).items():
        assert torch.allclose(getattr(metrics, name), value), name


# ------------------------------------------------------------------------------------------------- logprob helpers


def test_token_logprobs_and_entropy_match_log_softmax_and_are_stable():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 11, generator=g, dtype=F64)
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    logsm = torch.log_softmax(logits / 0.7, -1)
    expect_lp = logsm.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    expect_h = -(logsm.exp() * logsm).sum(-1)
    for chunk in (None, 4):
        assert torch.allclose(token_logprobs(logits, tokens, temperature=0.7, chunk_rows=chunk), expect_lp)
        assert torch.allclose(token_entropy(logits, temperature=0.7, chunk_rows=chunk), expect_h)
    # Huge logits: a near-one-hot distribution, entropy ≈ 0 and finite, logprob of the argmax ≈ 0.
    sharp = torch.tensor([[[1e4, 0.0, -1e4]]])
    assert torch.isfinite(token_entropy(sharp)).all() and token_entropy(sharp).item() == pytest.approx(0, abs=1e-6)
    assert token_logprobs(sharp, torch.tensor([[0]])).item() == pytest.approx(0, abs=1e-6)
    # bf16 logits are scored in float32.
    assert token_logprobs(logits.bfloat16(), tokens).dtype == torch.float32
    with pytest.raises(ValueError, match="do not match"):
        token_logprobs(logits, tokens[:, :4])


def test_metrics_add_and_summarise():
    one = LossMetrics(*[torch.tensor(float(i), dtype=F64) for i in range(13)])
    two = one + one
    assert two.loss_tokens.item() == 2 * one.loss_tokens.item()
    assert two.importance_weight_max.item() == one.importance_weight_max.item()  # a max, not a sum


# ------------------------------------------------------------------------------------------------------------- MoE


def test_load_balance_is_one_for_uniform_routing_and_num_experts_when_collapsed():
    experts = 4
    # Token i leans on expert i (top-1) or on experts i and i+1 (top-2): every expert gets the same share of
    # assignments, and by symmetry every expert's mean probability is 1/E.
    top1 = torch.eye(experts, dtype=F64) * 3.0
    top2 = top1 + torch.roll(top1, 1, dims=1)
    assert load_balance_loss((top1, top1), None, top_k=1).item() == pytest.approx(1.0)
    assert load_balance_loss((top2,), None, top_k=2).item() == pytest.approx(1.0)
    # Everything on expert 0 with probability p0: f = [1, 0, 0, 0], P_0 = p0  ->  E · p0 ≈ E.
    collapsed = torch.tensor([[20.0, 0.0, 0.0, 0.0]] * 5, dtype=F64)
    p0 = math.exp(20) / (math.exp(20) + 3)
    assert load_balance_loss((collapsed,), None, top_k=1).item() == pytest.approx(experts * p0)


def test_load_balance_hand_computed_and_padding_excluded():
    # 2 experts, top-1. Tokens a, b: logits [ln 3, 0] -> p = [0.75, 0.25] -> expert 0; token c: [0, ln 3] -> expert 1.
    #   f = [2/3, 1/3];  P = [(0.75 + 0.75 + 0.25)/3, (0.25 + 0.25 + 0.75)/3] = [1.75/3, 1.25/3]
    #   LB = 2 · (2/3 · 1.75/3 + 1/3 · 1.25/3) = 2 · 4.75/9 = 9.5/9
    ln3 = math.log(3)
    # HF layout: [batch · seq, E] with batch 2, seq 2; the last position is padding with wild logits.
    layer = torch.tensor([[ln3, 0.0], [ln3, 0.0], [0.0, ln3], [-50.0, 50.0]], dtype=F64)
    attention = torch.tensor([[1, 1], [1, 0]])
    assert load_balance_loss((layer,), attention, top_k=1).item() == pytest.approx(9.5 / 9)
    assert load_balance_loss((layer[:3],), None, top_k=1).item() == pytest.approx(9.5 / 9)
    with pytest.raises(ValueError, match="top_k"):
        load_balance_loss((layer,), attention, top_k=3)
    with pytest.raises(ValueError, match="attention mask"):
        load_balance_loss((layer,), torch.ones(1, 3), top_k=1)


def test_router_z_loss_hand_computed_and_padding_excluded():
    # Layer 1: token a [0, 0] -> lse = ln 2; token b [ln 3, 0] -> lse = ln 4 = 2 ln 2  -> mean of squares 2.5 (ln 2)²
    # Layer 2: both tokens [0, 0] -> (ln 2)².  Averaged over layers: 1.75 (ln 2)².
    ln3 = math.log(3)
    pad = [100.0, -100.0]
    layer1 = torch.tensor([[0.0, 0.0], [ln3, 0.0], pad], dtype=F64)
    layer2 = torch.tensor([[0.0, 0.0], [0.0, 0.0], pad], dtype=F64)
    attention = torch.tensor([[1, 1, 0]])
    assert router_z_loss((layer1, None, layer2), attention).item() == pytest.approx(1.75 * LN2**2)
    both = router_losses((layer1, layer2), attention, top_k=1)
    assert both.z_loss.item() == pytest.approx(1.75 * LN2**2)
    with pytest.raises(ValueError, match="no router logits"):
        router_z_loss((None,), None)


def test_router_losses_are_differentiable_and_weighted_by_the_micro_batch_share():
    logits = torch.randn(6, 4, dtype=F64, requires_grad=True)
    r = router_losses((logits,), None, top_k=2)
    (r.load_balance + r.z_loss).backward()
    assert logits.grad.abs().sum() > 0
    # This micro-batch holds 3 of the step's 10 loss tokens: it adds 3/10 · (α_bal·LB + α_z·Z)
    #   = 0.3 · (0.1·2 + 0.01·3) = 0.069 to a zero policy-gradient term (A = 0).
    logp = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    router = RouterLosses(load_balance=torch.tensor(2.0, dtype=F64), z_loss=torch.tensor(3.0, dtype=F64))
    out = policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 3, dtype=torch.bool),
                      norm("c3po", 10, [3, 7]), algo(load_balance_coef=0.1, router_z_coef=0.01), router=router)
    assert out.loss.item() == pytest.approx(0.069)
    assert out.metrics.moe_aux.item() == pytest.approx(0.069)
