"""Two data-parallel ranks, each on its half of a batch, sum to the single-process gradient (DESIGN §3).

Each rank computes the loss of its rows with the *global* normaliser, backpropagates, and the gradients are
all-reduced with SUM (no 1/world): the result must equal the gradient of the whole batch in one process.
"""

import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ring_async.c3po.loss import LossNormaliser, policy_loss, token_entropy, token_logprobs
from ring_async.config import AlgorithmConfig

WORLD = 2
F64 = torch.float64


def _batch():
    """The same batch on every rank: 6 sequences of random features under a linear LM head (float64)."""
    g = torch.Generator().manual_seed(7)
    batch, seq, dim, vocab = 6, 5, 4, 9
    x = torch.randn(batch, seq, dim, generator=g, dtype=F64)
    head = torch.randn(dim, vocab, generator=g, dtype=F64)
    tokens = torch.randint(0, vocab, (batch, seq), generator=g)
    # Uneven halves on purpose: rank 0 gets 1+5+2 = 8 tokens, rank 1 gets 5+3+4 = 12.
    lengths = torch.tensor([1, 5, 2, 5, 3, 4])
    mask = torch.arange(seq) < lengths.unsqueeze(-1)
    with torch.no_grad():
        behaviour = token_logprobs(x @ (head + 0.3 * torch.randn(dim, vocab, generator=g, dtype=F64)), tokens)
        reference = token_logprobs(x @ (head + 0.2 * torch.randn(dim, vocab, generator=g, dtype=F64)), tokens)
    adv = torch.randn(batch, generator=g, dtype=F64)
    return x, head, tokens, mask, lengths, adv, behaviour, reference


def _grad_and_metrics(rows, aggregation):
    x, head, tokens, mask, lengths, adv, behaviour, reference = _batch()
    # Every rank builds the normaliser from the whole batch (Φ = 24 > the 20 tokens present: a c3po constant).
    normaliser = LossNormaliser.from_lengths(aggregation, 24, lengths.tolist())
    config = AlgorithmConfig(aggregation=aggregation, entropy_coef=0.01, kl_coef=0.1)
    weight = head.clone().requires_grad_()
    logits = x[rows] @ weight
    out = policy_loss(token_logprobs(logits, tokens[rows]), behaviour[rows], adv[rows], mask[rows], normaliser,
                      config, reference_logprobs=reference[rows], entropy=token_entropy(logits))
    out.loss.backward()
    return weight.grad, out.metrics


def _worker(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=30))
    try:
        torch.set_num_threads(1)
        half = slice(rank * 3, rank * 3 + 3)
        for aggregation in ("c3po", "grpo", "token_mean"):
            grad, metrics = _grad_and_metrics(half, aggregation)
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            metrics = metrics.all_reduce()
            whole_grad, whole_metrics = _grad_and_metrics(slice(None), aggregation)
            assert torch.allclose(grad, whole_grad, rtol=1e-10, atol=1e-12), aggregation
            for name, value in vars(whole_metrics).items():
                assert torch.allclose(getattr(metrics, name), value), (aggregation, name)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_summed_gradients_equal_the_single_process_gradient():
    # spawn raises here if either rank fails an assertion (or times out in a collective).
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)
