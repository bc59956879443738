"""The broker core: exactly-Φ steps, exactly-once intake, closed accounting, staleness, leases and back-pressure.

The property test drives a broker through random interleavings of leases, (partial, duplicated, out-of-order)
submissions, lease expiry, policy-version bumps and step emission, under random configurations, and checks the
invariants after every operation.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis import event
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ring_async.broker.core import Broker
from ring_async.broker.prompts import DatasetStream, Prompt, PromptQueue
from ring_async.c3po.advantages import group_advantages, is_zero_advantage
from ring_async.config import load_config
from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT, rollout_id
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.data.train_batch import TrainBatch
from ring_async.errors import BrokerError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_rollouts(group_id, prompt_id, samples, version=0, version_last=None):
    """samples: list of (sample_index, length, reward or None)."""
    n = len(samples)
    rng = np.random.default_rng(len(samples))
    return codec.build_batch(
        ROLLOUT,
        {
            "rollout_id": [rollout_id(group_id, i) for i, _, _ in samples],
            "group_id": [group_id] * n,
            "prompt_id": [prompt_id] * n,
            "sample_index": [i for i, _, _ in samples],
            "prompt_token_ids": codec.token_list_array([[1, 2, 3]] * n),
            "response_token_ids": codec.token_list_array([rng.integers(0, 100, length) for _, length, _ in samples]),
            "behaviour_logprobs": codec.token_list_array(
                [np.full(length, -0.5, dtype=np.float32) for _, length, _ in samples], codec.pa.float32()
            ),
            "policy_version_first": [version] * n,
            "policy_version_last": [version if version_last is None else version_last] * n,
            "finish_reason": ["stop"] * n,
            "reward_type": ["math"] * n,
            "reward": [r for _, _, r in samples],
            "verdict": ["unverifiable" if r is None else ("correct" if r else "incorrect") for _, _, r in samples],
            "generation_s": [0.0] * n,
            "verification_s": [0.0] * n,
            "completed_at": [0.0] * n,
        },
    )


def prompts(n):
    return [Prompt(f"p{i}", f"prompt {i}", "math") for i in range(n)]


def broker(clock=None, n_prompts=50, **overrides):
    # Most tests lease freely; the staleness hold (a few steps of Φ = 20 tokens) has its own tests below.
    defaults = {"algorithm.budget_tokens": 20, "broker.group_size": 2, "broker.max_pool_tokens": 1000,
                "broker.lease_within_staleness": False}
    config = load_config(overrides={**defaults, **overrides})
    return Broker(config, prompts(n_prompts), clock=clock or FakeClock())


def lease_one(b):
    groups = b.lease("gen", 1).groups
    assert groups.num_rows == 1
    return groups.column("group_id")[0].as_py(), groups.column("prompt_id")[0].as_py()


# --------------------------------------------------------------------------- unit behaviour


def test_a_step_carries_exactly_budget_tokens_in_pool_order_and_cuts_the_tail():
    b = broker()
    g1, p1 = lease_one(b)
    g2, p2 = lease_one(b)
    b.submit(make_rollouts(g2, p2, [(0, 8, 1.0), (1, 6, 0.0)]))  # g2 completes first: it is the oldest group
    b.submit(make_rollouts(g1, p1, [(1, 9, 0.0), (0, 5, 1.0)]))  # arrival order inside a group does not matter
    batch = b.next_batch()
    assert batch.loss_tokens == 20
    records = batch.records.to_pydict()
    assert records["rollout_id"] == [f"{g2}/0", f"{g2}/1", f"{g1}/0", f"{g1}/1"]
    assert records["full_response_tokens"] == [8, 6, 5, 9]
    # 8 + 6 + 5 = 19, so g1/1 straddles Φ = 20 and keeps one token; its 8-token tail is dropped and counted.
    assert [len(r) for r in records["response_token_ids"]] == [8, 6, 5, 1]
    assert b.ledger.tokens["cut_tail"] == 8
    assert b.pool_rollouts == 0 and b.next_batch() is None
    assert b.closure() == {"rollouts": 0, "tokens": 0}


def test_straddler_is_cut_token_exactly():
    b = broker()
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 15, 1.0), (1, 9, 0.0)]))
    batch = b.next_batch()
    lengths = [len(r) for r in batch.records.column("response_token_ids").to_pylist()]
    assert lengths == [15, 5] and batch.loss_tokens == 20
    assert batch.records.column("full_response_tokens").to_pylist() == [15, 9]
    assert len(batch.records.column("behaviour_logprobs")[1].as_py()) == 5
    assert b.ledger.tokens["cut_tail"] == 4 and b.ledger.tokens["trained"] == 20
    assert b.closure() == {"rollouts": 0, "tokens": 0}


def test_whole_mode_overshoots_by_less_than_one_response():
    b = broker(**{"algorithm.cut": "whole"})
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 15, 1.0), (1, 9, 0.0)]))
    batch = b.next_batch()
    assert batch.loss_tokens == 24 and batch.cut == "whole"


def test_advantages_are_computed_on_the_full_group_before_the_cut():
    b = broker(**{"broker.group_size": 4, "algorithm.budget_tokens": 12})
    g, p = lease_one(b)
    rewards = [1.0, 0.0, 0.0, 1.0]
    b.submit(make_rollouts(g, p, [(i, 5, r) for i, r in enumerate(rewards)]))
    batch = b.next_batch()
    np.testing.assert_allclose(batch.records.column("advantage").to_numpy(), group_advantages(rewards)[:3], rtol=1e-6)
    # The leftover stays pooled for the next step with its advantage.
    assert b.pool_rollouts == 1


def test_zero_advantage_groups_are_filtered_and_counted_or_kept():
    b = broker()
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 30, 1.0), (1, 30, 1.0)]))
    assert b.next_batch() is None
    assert b.ledger.rollouts["zero_advantage"] == 2 and b.ledger.tokens["zero_advantage"] == 60
    kept = broker(**{"algorithm.filter_zero_adv": False})
    g, p = lease_one(kept)
    kept.submit(make_rollouts(g, p, [(0, 30, 1.0), (1, 30, 1.0)]))
    assert kept.next_batch().records.column("advantage").to_pylist() == [0.0]


def test_unverifiable_rollouts_are_masked_not_scored_zero():
    b = broker(**{"broker.group_size": 3})
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 10, 1.0), (1, 10, None), (2, 10, 0.0)]))
    assert b.ledger.rollouts["unverifiable"] == 1
    batch = b.next_batch()
    assert batch.records.column("rollout_id").to_pylist() == [f"{g}/0", f"{g}/2"]
    np.testing.assert_allclose(batch.records.column("advantage").to_numpy(), group_advantages([1.0, 0.0]), rtol=1e-6)


def test_duplicates_are_counted_once_and_never_accepted_twice():
    b = broker(**{"broker.group_size": 3})
    g, p = lease_one(b)
    first = make_rollouts(g, p, [(0, 10, 1.0)])
    assert b.submit(first).accepted == 1
    assert b.submit(first).duplicates == 1
    both = make_rollouts(g, p, [(1, 10, 0.0), (1, 10, 0.0)])
    result = b.submit(both)
    assert (result.accepted, result.duplicates) == (1, 1)
    b.submit(make_rollouts(g, p, [(2, 10, 0.0)]))
    # After completion the group is closed: a retry of any member is a duplicate.
    assert b.submit(first).duplicates == 1
    assert b.ledger.accepted_rollouts == 3 and b.ledger.rejected_rollouts["duplicate"] == 3


def test_invalid_batches_are_refused_whole_with_a_reason():
    b = broker()
    g, p = lease_one(b)
    with pytest.raises(BrokerError, match="unknown group 'nope'"):
        b.submit(make_rollouts("nope", p, [(0, 3, 1.0)]))
    with pytest.raises(BrokerError, match="sample_index 5 outside group of 2"):
        b.submit(make_rollouts(g, p, [(0, 3, 1.0), (5, 3, 1.0)]))
    with pytest.raises(BrokerError, match="prompt 'other'"):
        b.submit(make_rollouts(g, "other", [(0, 3, 1.0)]))
    with pytest.raises(BrokerError, match="policy_version_last 1 < policy_version_first 2"):
        b.submit(make_rollouts(g, p, [(0, 3, 1.0)], version=2, version_last=1))
    bad_id = make_rollouts(g, p, [(0, 3, 1.0)])
    bad_id = bad_id.set_column(0, "rollout_id", codec.pa.array(["mine-0"]))
    with pytest.raises(BrokerError, match=r"id must be"):
        b.submit(bad_id)
    unscored = make_rollouts(g, p, [(0, 3, 1.0)]).to_pydict()
    unscored.update(reward=[None], verdict=["pending"])
    with pytest.raises(BrokerError, match="no reward with verdict 'pending'"):
        b.submit(codec.build_batch(ROLLOUT, unscored))
    # Nothing of the refused batches was accepted.
    assert b.ledger.accepted_rollouts == 0 and b.pending_rollouts == 0


def test_expired_lease_requeues_the_prompt_and_late_rollouts_are_rejected():
    clock = FakeClock()
    b = broker(clock, n_prompts=1, **{"broker.lease_timeout_s": 10})
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 7, 1.0)]))
    clock.now = 11.0
    assert b.expire_leases() == 1
    assert b.ledger.rollouts["lease_expired"] == 1 and b.ledger.tokens["lease_expired"] == 7
    assert b.submit(make_rollouts(g, p, [(1, 7, 0.0)])).late == 1
    # The prompt comes back, ahead of the dataset stream, under a new group id.
    again = b.lease("gen", 1).groups
    assert again.column("prompt_id")[0].as_py() == p and again.column("group_id")[0].as_py() != g
    assert b.closure() == {"rollouts": 0, "tokens": 0}


def test_a_restarted_generators_leases_end_at_once_and_its_prompts_come_back():
    clock = FakeClock()
    b = broker(clock, n_prompts=3, **{"broker.max_pool_tokens": 100_000})
    held = b.lease("gen-a", 2).groups
    other = b.lease("gen-b", 1).groups
    assert other.num_rows == 1
    (g0, g1), (p0, p1) = held.column("group_id").to_pylist(), held.column("prompt_id").to_pylist()
    b.submit(make_rollouts(g0, p0, [(0, 7, 1.0)]))
    # gen-a's first lease after a restart: what its previous process held is lost with it.
    again = b.lease("gen-a", 2, release_held=True)
    assert again.released == 2
    assert b.ledger.rollouts["lease_expired"] == 1 and b.ledger.tokens["lease_expired"] == 7
    assert sorted(again.groups.column("prompt_id").to_pylist()) == sorted([p0, p1])  # ahead of the dataset
    assert not {g0, g1} & set(again.groups.column("group_id").to_pylist())
    assert b.submit(make_rollouts(g0, p0, [(1, 7, 0.0)])).late == 1  # the old process's work is late now
    assert b.leased_groups == 3  # gen-b's group is untouched
    assert b.lease("gen-b", 1, release_held=False).released == 0
    assert b.closure() == {"rollouts": 0, "tokens": 0}


def test_stale_rollouts_are_dropped_at_completion_and_from_the_pool():
    b = broker(**{"algorithm.max_staleness": 1, "algorithm.budget_tokens": 100})
    g1, p1 = lease_one(b)
    b.submit(make_rollouts(g1, p1, [(0, 5, 1.0), (1, 5, 0.0)], version=0))
    assert b.pool_rollouts == 2
    b.set_policy_version(1)
    assert b.pool_rollouts == 2  # 1 - 0 <= 1
    b.set_policy_version(2)
    assert b.pool_rollouts == 0 and b.ledger.rollouts["stale"] == 2
    g2, p2 = lease_one(b)
    b.submit(make_rollouts(g2, p2, [(0, 5, 1.0), (1, 5, 0.0)], version=0))
    assert b.ledger.rollouts["stale"] == 4
    with pytest.raises(BrokerError, match="went backwards"):
        b.set_policy_version(1)


def test_a_masked_stale_rollout_counts_as_stale():
    # The generator stops samples that went stale (finish reason "abort", masked by the verifier): stale is why they
    # left, so the ledger says so; a masked fresh one is unverifiable as before.
    b = broker(**{"algorithm.max_staleness": 1, "broker.group_size": 3})
    g, p = lease_one(b)
    b.set_policy_version(2)
    b.submit(make_rollouts(g, p, [(0, 5, 1.0), (1, 7, None), (2, 5, 0.0)], version=0))
    assert b.ledger.rollouts["stale"] == 3 and b.ledger.tokens["stale"] == 17 and b.ledger.rollouts["unverifiable"] == 0
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 5, 1.0), (1, 7, None), (2, 5, 0.0)], version=1))
    assert b.ledger.rollouts["unverifiable"] == 1 and b.pool_rollouts == 2
    assert b.closure() == {"rollouts": 0, "tokens": 0}


def test_discard_mode_drops_leftovers_after_each_step():
    b = broker(**{"algorithm.leftovers": "discard", "broker.group_size": 4})
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 10, 1.0), (1, 10, 0.0), (2, 10, 1.0), (3, 10, 0.0)]))
    b.next_batch()
    assert b.pool_rollouts == 0 and b.ledger.rollouts["discarded"] == 2
    assert b.closure() == {"rollouts": 0, "tokens": 0}


def test_back_pressure_stops_leasing_until_the_pool_drains():
    b = broker(**{"broker.max_pool_tokens": 40, "broker.expected_response_tokens": 10, "broker.group_size": 2})
    first = b.lease("gen", 10)
    assert first.groups.num_rows == 2 and first.backpressure  # 2 groups x 2 x 10 expected tokens = 40
    for gid, pid in zip(first.groups.column("group_id").to_pylist(), first.groups.column("prompt_id").to_pylist()):
        b.submit(make_rollouts(gid, pid, [(0, 10, 1.0), (1, 10, 0.0)]))
    assert b.lease("gen", 1).backpressure and b.pool_tokens == 40
    b.next_batch()
    assert b.lease("gen", 1).groups.num_rows == 1


def test_inflight_group_bound():
    b = broker(**{"broker.max_inflight_groups": 3, "broker.max_pool_tokens": 100_000})
    assert b.lease("gen", 10).groups.num_rows == 3


def test_prompt_queue_priorities():
    queue = PromptQueue(iter(prompts(3)))
    queue.inject(Prompt("low", "x", "math", priority=-1))
    queue.inject(Prompt("high", "x", "math", priority=5))
    queue.inject(Prompt("normal-a", "x", "math"))
    queue.inject(Prompt("normal-b", "x", "math"))
    queue.requeue(Prompt("requeued", "x", "math"))
    order = [queue.pop().prompt_id for _ in range(8)]
    assert order == ["high", "requeued", "normal-a", "normal-b", "p0", "p1", "p2", "low"]
    assert queue.pop() is None and queue.exhausted


def test_dataset_stream_is_seeded_and_reshuffles_each_epoch():
    a = DatasetStream(prompts(5), seed=3)
    b = DatasetStream(prompts(5), seed=3)
    first = [next(a).prompt_id for _ in range(10)]
    assert first == [next(b).prompt_id for _ in range(10)]
    assert sorted(first[:5]) == sorted(first[5:]) == [f"p{i}" for i in range(5)]
    assert [p.prompt_id for p in DatasetStream(prompts(3), shuffle=False, epochs=1)] == ["p0", "p1", "p2"]


def test_injected_prompts_get_ids_and_group_sizes():
    b = broker(n_prompts=0)
    ids = b.inject([Prompt("", "what?", "external", group_size=3), Prompt("mine", "x", "math")])
    assert ids == ["injected-0", "mine"]
    groups = b.lease("gen", 5).groups
    assert groups.column("group_size").to_pylist() == [3, 2]
    with pytest.raises(BrokerError, match="group_size must be at least 1"):
        b.inject([Prompt("bad", "x", "math", group_size=0)])


def _run_to_steps(seed, steps=6):
    config = load_config(
        overrides={"run.seed": seed, "algorithm.budget_tokens": 3000, "broker.group_size": 4, "broker.max_pool_tokens": 20000}
    )
    b = Broker(config, prompts(200), clock=FakeClock())
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < steps:
        lease = b.lease("gen", 2)
        b.submit(synthetic_rollouts(lease.groups, rng, LengthSpread(low=10, high=900, median=200), b.policy_version))
        batch = b.next_batch()
        if batch is not None:
            out.append(batch.to_ipc())
            b.set_policy_version(b.policy_version + 1)
    return out


def test_deterministic_for_a_seed():
    assert _run_to_steps(7) == _run_to_steps(7)
    assert _run_to_steps(7) != _run_to_steps(8)


# --------------------------------------------------------------------------- property test


class BrokerMachine(RuleBasedStateMachine):
    """Random interleavings under a random configuration; invariants checked after every step."""

    @initialize(
        budget=st.integers(1, 150),
        cut=st.sampled_from(["exact", "whole"]),
        leftovers=st.sampled_from(["keep", "discard"]),
        filter_zero=st.booleans(),
        staleness=st.integers(0, 2),
        group_size=st.integers(1, 5),
    )
    def configure(self, budget, cut, leftovers, filter_zero, staleness, group_size):
        self.clock = FakeClock()
        self.config = load_config(
            overrides={
                "algorithm.budget_tokens": budget,
                "algorithm.cut": cut,
                "algorithm.leftovers": leftovers,
                "algorithm.filter_zero_adv": filter_zero,
                "algorithm.max_staleness": staleness,
                "broker.group_size": group_size,
                "broker.lease_timeout_s": 100,
                "broker.max_pool_tokens": 5000,
                "broker.max_inflight_groups": 8,
            }
        )
        self.broker = Broker(self.config, prompts(30), clock=self.clock)
        self.open = {}  # group_id -> (prompt_id, size, {index: (length, reward, version)})
        self.trained_ids = set()
        self.trained_tokens = 0
        self.rewards = {}  # group_id -> {index: reward}, as submitted

    @rule(n=st.integers(1, 3))
    def lease(self, n):
        groups = self.broker.lease("gen", n).groups.to_pydict()
        for gid, pid, size in zip(groups["group_id"], groups["prompt_id"], groups["group_size"]):
            self.open[gid] = (pid, size, {})

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def submit(self, data):
        gid = data.draw(st.sampled_from(sorted(self.open)[-6:]))  # recent groups; older ones are mostly closed
        pid, size, _ = self.open[gid]
        if data.draw(st.booleans()):
            # The common case: the whole group at once, in any order, sometimes with a repeat.
            indices = data.draw(st.permutations(range(size)))
            indices = list(indices) + data.draw(st.lists(st.integers(0, size - 1), max_size=1))
        else:
            indices = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=size + 2))
        samples = []
        for index in indices:
            length = data.draw(st.integers(0, 100))
            reward = data.draw(st.sampled_from([0.0, 1.0, 1.0, 0.5, None]))
            samples.append((index, length, reward))
        current = self.broker.policy_version
        version = data.draw(st.sampled_from([current, current, current, max(0, current - 1), max(0, current - 3)]))
        batch = make_rollouts(gid, pid, samples, version=version)
        before = self.broker.ledger.accepted_rollouts
        result = self.broker.submit(batch)
        assert self.broker.ledger.accepted_rollouts - before == result.accepted
        assert result.accepted + result.duplicates + result.late == len(samples)
        seen = self.rewards.setdefault(gid, {})
        for index, _, reward in samples:
            seen.setdefault(index, reward)

    @rule(dt=st.floats(1, 40))
    def advance_clock(self, dt):
        self.clock.now += dt
        self.broker.expire_leases()

    @rule()
    def bump_version(self):
        self.broker.set_policy_version(self.broker.policy_version + 1)

    @rule()
    def step(self):
        pooled = self.broker.pool_tokens
        batch = self.broker.next_batch()
        budget = self.config.algorithm.budget_tokens
        if batch is None:
            assert pooled < budget
            return
        event("emitted a step")
        batch = TrainBatch.from_ipc(batch.to_ipc())
        records = batch.records.to_pydict()
        lengths = [len(r) for r in records["response_token_ids"]]
        if self.config.algorithm.cut == "exact":
            assert batch.loss_tokens == budget
        else:
            assert budget <= batch.loss_tokens < budget + records["full_response_tokens"][-1] + 1
            assert lengths == records["full_response_tokens"]
        # Only the last row may be cut.
        assert lengths[:-1] == records["full_response_tokens"][:-1]
        for rid, v_first in zip(records["rollout_id"], records["policy_version_first"]):
            assert rid not in self.trained_ids, f"{rid} trained twice"
            self.trained_ids.add(rid)
            assert batch.policy_version - v_first <= self.config.algorithm.max_staleness
        # Advantages are those of the full verified group as submitted.
        for rid, adv in zip(records["rollout_id"], records["advantage"]):
            gid, index = rid.rsplit("/", 1)
            group = self.rewards[gid]
            members = sorted(i for i, r in group.items() if r is not None)
            rewards = [group[i] for i in members]
            assert not (self.config.algorithm.filter_zero_adv and is_zero_advantage(rewards))
            expected = group_advantages(rewards, eps=self.config.algorithm.advantage_eps)[members.index(int(index))]
            assert adv == pytest.approx(expected, rel=1e-5, abs=1e-6)
        # Groups appear contiguously and in sample order within the batch.
        keys = [(rid.rsplit("/", 1)[0], int(rid.rsplit("/", 1)[1])) for rid in records["rollout_id"]]
        seen_groups = []
        for gid, _ in keys:
            if not seen_groups or seen_groups[-1] != gid:
                assert gid not in seen_groups, "a group was split and reordered within a step"
                seen_groups.append(gid)
        for (g1, i1), (g2, i2) in zip(keys, keys[1:]):
            assert g1 != g2 or i1 < i2
        self.trained_tokens += batch.loss_tokens

    @invariant()
    def accounting_closes(self):
        assert self.broker.closure() == {"rollouts": 0, "tokens": 0}
        assert self.broker.ledger.tokens["trained"] == self.trained_tokens
        assert self.broker.ledger.rollouts["trained"] == len(self.trained_ids)


TestBrokerProperties = BrokerMachine.TestCase
TestBrokerProperties.settings = __import__("hypothesis").settings(
    max_examples=2 * int(__import__("os").environ.get("RING_ASYNC_HYPOTHESIS_EXAMPLES", "150")),
    stateful_step_count=50,
    deadline=None,
)


# --------------------------------------------------------------------------- run.mode sync (the on-policy baseline)


def sync_broker(**overrides):
    return broker(**{"run.mode": "sync", "algorithm.max_staleness": 0, "broker.expected_response_tokens": 10,
                     **overrides})


def test_sync_mode_leases_about_one_step_then_holds_until_the_step_is_trained():
    b = sync_broker()  # Φ = 20, groups of 2, 10 tokens expected per response: one group is projected to fill a step
    first = b.lease("gen", 4)
    assert first.groups.num_rows == 1 and first.backpressure
    held = b.lease("gen", 4)
    assert held.groups.num_rows == 0 and held.backpressure and held.retry_after_s > 0
    g, p = first.groups.column("group_id")[0].as_py(), first.groups.column("prompt_id")[0].as_py()
    b.submit(make_rollouts(g, p, [(0, 20, 1.0), (1, 6, 0.0)]))
    batch = b.next_batch()
    assert batch is not None and batch.loss_tokens == 20 and batch.policy_version == 0
    # The step is training: nothing is leased, whatever the pool holds, until the learner reports version 1.
    assert b.lease("gen", 4).groups.num_rows == 0
    b.set_policy_version(1)
    # The leftover tail of version 0 is now stale (max_staleness 0); generation resumes on version 1.
    assert b.pool_tokens == 0 and b.ledger.tokens["stale"] == 6
    assert b.lease("gen", 4).groups.num_rows >= 1
    assert b.closure() == {"rollouts": 0, "tokens": 0}


def test_sync_mode_emits_a_step_only_once_generation_has_drained():
    b = sync_broker(**{"broker.expected_response_tokens": 1})  # a bad estimate: three groups are leased
    leased = b.lease("gen", 3).groups.to_pydict()
    assert len(leased["group_id"]) == 3
    (g1, g2, g3), (p1, p2, p3) = leased["group_id"], leased["prompt_id"]
    b.submit(make_rollouts(g1, p1, [(0, 15, 1.0), (1, 15, 0.0)]))
    b.submit(make_rollouts(g2, p2, [(0, 5, 1.0), (1, 5, 0.0)]))
    assert b.pool_tokens >= 20 and b.next_batch() is None  # g3 is still being generated by version 0
    b.submit(make_rollouts(g3, p3, [(0, 5, 1.0), (1, 5, 0.0)]))
    batch = b.next_batch()
    assert batch is not None and set(batch.records.column("policy_version_first").to_pylist()) == {0}


def test_sync_mode_projection_learns_the_usable_share():
    """Zero-advantage groups never reach the pool: once measured, the projection leases enough to cover them."""
    b = sync_broker()
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 10, 1.0), (1, 10, 1.0)]))  # all correct: filtered, usable share 0 so far
    assert b.pool_tokens == 0
    assert b.lease("gen", 4).groups.num_rows == 4  # nothing projected to reach the pool: lease all that is asked


def test_async_mode_without_the_staleness_hold_leases_up_to_the_pool_bound():
    b = broker(**{"broker.expected_response_tokens": 10})
    assert b.lease("gen", 4).groups.num_rows == 4


# --------------------------------------------------------------------------- async: lease within the staleness bound


def held_broker(**overrides):
    # Φ = 20, groups of 2, 10 tokens expected per response: a group is projected to yield one step's tokens.
    return broker(**{"broker.lease_within_staleness": True, "broker.expected_response_tokens": 10, **overrides})


def test_async_leases_what_the_learner_can_train_before_it_goes_stale():
    b = held_broker(**{"algorithm.max_staleness": 1})  # begun at version 0: usable by the steps of versions 0 and 1
    first = b.lease("gen", 8)
    assert first.groups.num_rows == 2 and first.backpressure  # 2 x 20 projected tokens: both steps spoken for
    held = b.lease("gen", 8)
    assert held.groups.num_rows == 0 and held.backpressure and held.retry_after_s > 0
    for g, p in zip(first.groups.column("group_id").to_pylist(), first.groups.column("prompt_id").to_pylist()):
        b.submit(make_rollouts(g, p, [(0, 10, 1.0), (1, 10, 0.0)]))
    assert b.pool_tokens == 40 and b.lease("gen", 8).groups.num_rows == 0
    # Version 0's step is emitted (training): a rollout begun now can join only version 1's, which the pool fills.
    assert b.next_batch().loss_tokens == 20
    assert b.lease("gen", 8).groups.num_rows == 0
    b.set_policy_version(1)  # versions 1 and 2 are open to new rollouts; the pool's 20 tokens fill one of them
    assert b.lease("gen", 8).groups.num_rows == 1
    assert b.closure() == {"rollouts": 0, "tokens": 0}


def test_pooled_rollouts_that_will_go_stale_do_not_hold_leasing():
    b = held_broker(**{"algorithm.max_staleness": 1})
    b.set_policy_version(1)
    (g_new, p_new), (g_old, p_old) = lease_one(b), lease_one(b)
    b.submit(make_rollouts(g_new, p_new, [(0, 10, 1.0), (1, 10, 0.0)], version=1))
    b.submit(make_rollouts(g_old, p_old, [(0, 10, 1.0), (1, 10, 0.0)], version=0))
    assert b.next_batch().records.column("group_id").to_pylist() == [g_new, g_new]  # completion order
    # Version 1's step is taken; g_old (version 0) cannot join version 2's, so it leaves room for a fresh group.
    assert b.pool_tokens == 20 and b.lease("gen", 8).groups.num_rows == 1
    b.set_policy_version(2)
    assert b.ledger.tokens["stale"] == 20 and b.closure() == {"rollouts": 0, "tokens": 0}


def test_the_staleness_hold_grows_with_the_bound_and_learns_the_usable_share():
    assert held_broker(**{"algorithm.max_staleness": 3}).lease("gen", 8).groups.num_rows == 4
    b = held_broker(**{"algorithm.max_staleness": 0})
    g, p = lease_one(b)
    b.submit(make_rollouts(g, p, [(0, 10, 1.0), (1, 10, 1.0)]))  # zero advantage: filtered, usable share 0 so far
    assert b.lease("gen", 8).groups.num_rows == 8  # nothing is projected to reach the pool: no hold


def test_outcomes_of_injected_prompts_are_counted_apart():
    b = broker(n_prompts=0)
    [pid] = b.inject([Prompt("", "from a client", "math", priority=5)])
    g, p = lease_one(b)
    assert p == pid == "injected-0"
    b.submit(make_rollouts(g, p, [(0, 15, 1.0), (1, 9, 0.0)]))
    assert b.next_batch().loss_tokens == 20
    assert b.injected_rollouts == {"accepted": 2, "trained": 2}
    assert b.status()["injected_rollouts"] == {"accepted": 2, "trained": 2}


def test_version_order_trains_what_goes_stale_soonest_first():
    # Groups complete out of version order (a long group begun under version 0 finishes after a short one begun under
    # 1). completed: the newer group is trained first; version: the older one, its members kept together.
    def pooled_order(order):
        b = broker(**{"algorithm.max_staleness": 1, "algorithm.select_order": order, "algorithm.budget_tokens": 10})
        b.set_policy_version(1)
        g_new, p_new = lease_one(b)
        g_old, p_old = lease_one(b)
        b.submit(make_rollouts(g_new, p_new, [(0, 5, 1.0), (1, 5, 0.0)], version=1))
        b.submit(make_rollouts(g_old, p_old, [(0, 5, 1.0), (1, 5, 0.0)], version=0))
        return b.next_batch().records.column("group_id").to_pylist(), g_new, g_old

    rows, g_new, _ = pooled_order("completed")
    assert rows == [g_new, g_new]
    rows, _, g_old = pooled_order("version")
    assert rows == [g_old, g_old]
