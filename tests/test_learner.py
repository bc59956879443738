"""The learner core: exact gradient accounting through DeepSpeed, one step per batch, refusals, checkpoint/resume.

Train batches come from the real broker (prompts leased, synthetic rollouts submitted, a Φ-token step assembled), over
a small embedded policy. Gradients are read exactly with plain SGD at lr = 1: the parameter change of one step *is*
minus the gradient DeepSpeed applied, which is compared with the gradient of the whole batch in one plain-torch
backward (no DeepSpeed, one micro-batch).
"""

from __future__ import annotations

import socket
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ring_async.broker.core import Broker
from ring_async.broker.prompts import Prompt
from ring_async.c3po.loss import LossNormaliser
from ring_async.config import ModelConfig, config_from_dict
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.data.train_batch import TrainBatch
from ring_async.engines.training import BatchRejected, LearnerCore, StepOrderError
from ring_async.engines.training.forward import micro_batch_loss
from ring_async.engines.training.micro_batches import BatchRows, collate, plan_micro_batches
from ring_async.errors import PayloadError
from ring_async.policy.model import build_policy, load_policy, save_policy
from ring_async.policy.tokenizer import build_tokenizer

SMALL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, num_experts=4, experts_per_token=2,
                    expert_size=32, max_length=128)
BUDGET = 160


def _config(tmp_path, **learner):
    return config_from_dict({
        "run": {"run_dir": str(tmp_path / "run"), "seed": 0},
        "algorithm": {"budget_tokens": BUDGET, "entropy_coef": 0.01, "kl_coef": 0.05, "load_balance_coef": 0.01,
                      "router_z_coef": 0.001, "max_staleness": 4},
        "broker": {"group_size": 4, "max_pool_tokens": 4096, "expected_response_tokens": 16},
        "learner": {"device": "cpu", **learner},
    })


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    tokenizer = build_tokenizer(1024)
    return save_policy(build_policy(SMALL, tokenizer, seed=0), tokenizer, tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="module")
def vocab(policy_dir):
    return load_policy(policy_dir).model.get_input_embeddings().weight.shape[0]


def broker_batches(config, vocab: int, steps: int, seed: int = 0) -> list[TrainBatch]:
    """``steps`` consecutive train batches assembled by the real broker from synthetic rollouts of version 0."""
    rng = np.random.default_rng(seed)
    prompts = [Prompt(f"p{i}", f"prompt {i}", "math", answer="1") for i in range(200)]
    broker = Broker(config, prompts)
    out = []
    while len(out) < steps:
        lease = broker.lease("g0", 2)
        rollouts = synthetic_rollouts(lease.groups, rng, LengthSpread(low=3, high=40, median=14), policy_version=0,
                                      prompt_tokens=6, vocab_size=vocab)
        broker.submit(rollouts)
        while len(out) < steps and (batch := broker.next_batch()) is not None:
            out.append(batch)
    return out


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def reference_gradient(config, policy_dir, batch: TrainBatch) -> dict[str, torch.Tensor]:
    """d(step loss)/dθ of the whole batch in one plain-torch forward/backward (no DeepSpeed, no micro-batches)."""
    torch.manual_seed(0)
    policy = load_policy(policy_dir, experts_implementation="eager")
    model = policy.model.train()
    reference = load_policy(policy_dir, experts_implementation="eager").model.eval().requires_grad_(False)
    data = BatchRows.from_train_batch(batch)
    micro = collate(data, list(range(data.num_rows)), policy.tokenizer.pad_token_id)
    normaliser = LossNormaliser.from_train_batch(batch, config.algorithm.aggregation)
    result = micro_batch_loss(model, micro, normaliser, config.algorithm, reference=reference,
                              moe_top_k=model.config.num_experts_per_tok)
    result.loss.loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def applied_gradient(before: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """With SGD at lr = 1 and no clipping, θ_before − θ_after is the gradient the optimizer applied."""
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}


def assert_same_gradient(got, want):
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, atol=2e-6, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_plan_shards_and_packs_every_row_once_with_equal_counts():
    lengths = [50, 3, 17, 17, 90, 8, 8, 8, 60, 1]
    for world in (1, 2, 3):
        plan = plan_micro_batches(lengths, world, max_tokens=100)
        assert len({len(p) for p in plan}) == 1  # every rank runs the same number of micro-batches
        rows = sorted(r for rank in plan for micro in rank for r in micro)
        assert rows == list(range(len(lengths)))
        for rank in plan:
            for micro in rank:
                if len(micro) > 1:
                    assert len(micro) * max(lengths[r] for r in micro) <= 100
    # The two ranks' token loads differ by at most the longest row.
    loads = [sum(lengths[r] for m in rank for r in m) for rank in plan_micro_batches(lengths, 2, 1000)]
    assert abs(loads[0] - loads[1]) <= max(lengths)


def _exact_config(tmp_path, router: bool = False, **learner):
    """SGD at lr 1, no clipping: the step's parameter change is the gradient. The MoE router terms are statistics
    of each micro-batch's routing (ring_async/c3po/moe.py), not token sums: a split of the batch legitimately changes
    them, so the split-invariance checks leave them out and a one-micro-batch check covers them."""
    config = _config(tmp_path, optimizer="sgd", lr=1.0, grad_clip=0.0, **learner)
    if router:
        return config
    return config.model_copy(update={"algorithm": config.algorithm.model_copy(
        update={"load_balance_coef": 0.0, "router_z_coef": 0.0})})


@pytest.mark.parametrize("aggregation", ["c3po", "grpo", "token_mean"])
def test_micro_batched_deepspeed_step_applies_the_single_batch_gradient(tmp_path, policy_dir, vocab, aggregation):
    config = _exact_config(tmp_path, max_tokens_per_micro_batch=64)
    config = config.model_copy(update={"algorithm": config.algorithm.model_copy(update={"aggregation": aggregation})})
    (batch,) = broker_batches(config, vocab, 1)
    assert batch.loss_tokens == BUDGET
    learner = LearnerCore(config, policy_dir)
    before = _params(learner.module)
    result = learner.train_step(batch.to_ipc())
    assert result.metrics["micro_batches"] >= 4
    assert result.metrics["loss_tokens"] == BUDGET and result.policy_version == 1
    assert_same_gradient(applied_gradient(before, learner.module), reference_gradient(config, policy_dir, batch))


def test_one_micro_batch_step_with_router_losses_applies_the_reference_gradient(tmp_path, policy_dir, vocab):
    config = _exact_config(tmp_path, router=True, max_tokens_per_micro_batch=100_000)
    (batch,) = broker_batches(config, vocab, 1, seed=1)
    learner = LearnerCore(config, policy_dir)
    before = _params(learner.module)
    result = learner.train_step(batch)
    assert result.metrics["micro_batches"] == 1 and result.metrics["moe_aux"] > 0
    assert_same_gradient(applied_gradient(before, learner.module), reference_gradient(config, policy_dir, batch))


def _dp_worker(rank: int, port: int, tmp_path, policy_dir, batch_ipc: bytes) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        torch.set_num_threads(1)
        config = _exact_config(tmp_path, max_tokens_per_micro_batch=64)
        learner = LearnerCore(config, policy_dir, rank=rank, world_size=2)
        before = _params(learner.module)
        result = learner.train_step(batch_ipc)
        if rank == 0:  # a file, not a queue: a big message would block the child until the parent reads it
            torch.save((applied_gradient(before, learner.module), result.metrics["loss_tokens"]), tmp_path / "rank0.pt")
    finally:
        dist.destroy_process_group()


def test_two_data_parallel_ranks_apply_the_single_process_gradient(tmp_path, policy_dir, vocab):
    config = _exact_config(tmp_path, max_tokens_per_micro_batch=64)
    (batch,) = broker_batches(config, vocab, 1, seed=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_dp_worker, args=(port, tmp_path, policy_dir, batch.to_ipc()), nprocs=2, start_method="spawn",
                       join=True)
    grads, loss_tokens = torch.load(tmp_path / "rank0.pt")
    assert loss_tokens == BUDGET  # the two ranks' shares add up to Φ
    assert_same_gradient(grads, reference_gradient(config, policy_dir, batch))


def test_metrics_versions_and_staleness(tmp_path, policy_dir, vocab):
    config = _config(tmp_path)
    batches = broker_batches(config, vocab, 2)
    learner = LearnerCore(config, policy_dir)
    first = learner.train_step(batches[0])
    second = learner.train_step(batches[1])
    assert (first.policy_version, second.policy_version) == (1, 2)
    m = second.metrics
    for key in ("loss", "pg_loss", "entropy_bonus", "kl_penalty", "moe_aux", "grad_norm", "entropy", "clip_fraction",
                "kl", "tokens_per_s"):
        assert np.isfinite(m[key]), key
    assert m["loss_tokens"] == BUDGET and m["budget_tokens"] == BUDGET
    assert m["staleness_hist"] == {1: m["sequences"]}  # version-0 rollouts trained at version 1
    assert first.metrics["staleness_hist"] == {0: first.metrics["sequences"]}
    # On-policy rows of the first step: the learner's logprobs against synthetic "behaviour" ones differ.
    assert first.metrics["logprob_mismatch_tokens"] == BUDGET and first.metrics["logprob_mismatch_mean"] > 0
    assert second.metrics["logprob_mismatch_tokens"] == 0  # nothing was generated by version 1
    assert np.isnan(second.metrics["logprob_mismatch_mean"])
    assert m["kl"] > 0 and m["grad_norm"] > 0


def _tampered(batch: TrainBatch, column: str, fn) -> TrainBatch:
    records = batch.records
    values = records.column(column).to_pylist()
    values[0] = fn(values[0])
    arrays = [pa.array(values, type=records.schema.field(column).type) if name == column else records.column(name)
              for name in records.schema.names]
    return TrainBatch(batch.step_id, batch.budget_tokens, batch.cut, batch.policy_version,
                      pa.RecordBatch.from_arrays(arrays, schema=records.schema))


def test_bad_batches_are_refused_and_the_learner_keeps_training(tmp_path, policy_dir, vocab):
    config = _config(tmp_path)
    batches = broker_batches(config, vocab, 2)
    learner = LearnerCore(config, policy_dir)
    before = _params(learner.module)
    bad = [
        (_tampered(batches[0], "response_token_ids", lambda ids: [vocab + 5] * len(ids)), BatchRejected, "vocabulary"),
        (_tampered(batches[0], "behaviour_logprobs", lambda lp: [float("nan")] * len(lp)), BatchRejected, "finite"),
        (_tampered(batches[0], "advantage", lambda a: float("inf")), BatchRejected, "advantages"),
        (_tampered(batches[0], "policy_version_last", lambda v: 7), BatchRejected, "versions"),
        (_tampered(batches[0], "prompt_token_ids", lambda ids: []), BatchRejected, "empty prompt"),
        (batches[1], StepOrderError, "skips ahead"),
    ]
    for batch, error, words in bad:
        with pytest.raises(error, match=words):
            learner.train_step(batch)
    with pytest.raises(PayloadError):
        learner.train_step(b"not arrow at all")
    with pytest.raises(PayloadError):
        learner.train_step(batches[0].to_ipc()[:-40])
    assert learner.step == 0
    for name, p in learner.module.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
    learner.train_step(batches[0])
    with pytest.raises(StepOrderError, match="already trained"):
        learner.train_step(batches[0])
    assert learner.train_step(batches[1]).policy_version == 2


def test_resume_gives_the_same_next_steps_bit_for_bit(tmp_path, policy_dir, vocab):
    config = _config(tmp_path, lr=1e-3, keep_checkpoints=1)
    batches = broker_batches(config, vocab, 4)
    straight = LearnerCore(config, policy_dir)
    losses = [straight.train_step(b).metrics["loss"] for b in batches]

    first = LearnerCore(config, policy_dir)
    for b in batches[:2]:
        first.train_step(b)
    info = first.save_checkpoint()
    assert info.step == 2 and info.last_consumed_step == batches[1].step_id
    assert (info.path / "policy" / "config.json").is_file()
    del first

    resumed = LearnerCore(config, resume_from=info.path.parent)  # the checkpoint dir: `latest` names the folder
    assert (resumed.step, resumed.last_consumed_step) == (2, batches[1].step_id)
    with pytest.raises(StepOrderError):
        resumed.train_step(batches[1])
    again = [resumed.train_step(b).metrics["loss"] for b in batches[2:]]
    assert again == losses[2:]
    for (name, p), q in zip(straight.module.named_parameters(), resumed.module.parameters()):
        assert torch.equal(p, q), name
    second = resumed.save_checkpoint()
    assert not info.path.exists() and second.path.exists()  # keep_checkpoints=1 pruned the older one
