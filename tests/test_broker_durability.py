"""Broker restarts: the journal replays to the same state, torn writes are dropped, corruption is refused, and
train batches are re-delivered by step id until acknowledged."""

import numpy as np
import pytest

from ring_async.broker.durable import JOURNAL_DIR, DurableBroker
from ring_async.broker.journal import Journal, JournalError
from ring_async.broker.prompts import Prompt
from ring_async.config import load_config
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.errors import BrokerError

PROMPTS = [Prompt(f"p{i}", f"prompt {i}", "math") for i in range(100)]
CONFIG = load_config(overrides={"algorithm.budget_tokens": 2000, "broker.group_size": 4, "broker.max_pool_tokens": 20000})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 0.5
        return self.now


def drive(broker, rng, rounds):
    """Lease, answer and submit, take steps; returns the step ids emitted."""
    steps = []
    for _ in range(rounds):
        lease = broker.lease("gen", 2)
        if lease.groups.num_rows:
            broker.submit(synthetic_rollouts(lease.groups, rng, LengthSpread(low=20, high=400, median=120),
                                             broker.core.policy_version))
        batch = broker.train_batch(broker.core.steps_emitted)
        if batch is not None:
            steps.append(batch.step_id)
            broker.set_policy_version(broker.core.policy_version + 1)
    return steps


def test_restart_replays_to_the_same_state_and_continues_identically(tmp_path):
    def phase_one(run_dir):
        broker = DurableBroker(CONFIG, PROMPTS, run_dir=run_dir, clock=Clock())
        broker.inject([Prompt("", "injected", "external", group_size=2)])
        steps = drive(broker, np.random.default_rng(0), 12)
        broker.acknowledge(steps[0])
        return broker, steps

    reference, steps = phase_one(None)  # never stops
    first, _ = phase_one(tmp_path)
    assert steps, "the workload must emit steps"
    first.close()

    second = DurableBroker(CONFIG, PROMPTS, run_dir=tmp_path, clock=Clock())
    assert {**second.status(), "journal_seq": None} == reference.status()
    assert second.closure() == {"rollouts": 0, "tokens": 0}
    # Unacknowledged steps are re-delivered byte for byte.
    for step in steps[1:]:
        assert second.train_batch(step).to_ipc() == reference.train_batch(step).to_ipc()
    with pytest.raises(BrokerError, match="already acknowledged"):
        second.train_batch(steps[0])
    # The restarted broker goes on exactly as the one that never stopped (same inputs, same clock values).
    reference._wall, second._wall = Clock(), Clock()
    assert drive(reference, np.random.default_rng(1), 5) == drive(second, np.random.default_rng(1), 5)
    assert {**second.status(), "journal_seq": None} == reference.status()


def test_idle_leases_are_not_journaled_and_a_release_replays(tmp_path):
    config = CONFIG.model_copy(update={"broker": CONFIG.broker.model_copy(update={"max_inflight_groups": 3})})
    broker = DurableBroker(config, PROMPTS, run_dir=tmp_path, clock=Clock())
    lease = broker.lease("gen-a", 3)
    assert lease.groups.num_rows == 3
    broker.submit(synthetic_rollouts(lease.groups.slice(0, 1), np.random.default_rng(0),
                                     LengthSpread(low=20, high=40, median=30), 0).slice(0, 2))
    seq = broker.status()["journal_seq"]
    for _ in range(20):  # a generator held back (3 groups out at most) polling: nothing changes or is journaled
        assert broker.lease("gen-b", 2).groups.num_rows == 0
    assert broker.status()["journal_seq"] == seq
    released = broker.lease("gen-a", 2, release_held=True)  # gen-a restarted
    assert released.released == 3 and released.groups.num_rows == 2
    state = broker.status()
    broker.close()

    reopened = DurableBroker(config, PROMPTS, run_dir=tmp_path, clock=Clock())
    assert {**reopened.status(), "journal_seq": None} == {**state, "journal_seq": None}
    assert reopened.core.ledger.rollouts["lease_expired"] == 2
    assert reopened.closure() == {"rollouts": 0, "tokens": 0}


def test_a_torn_final_write_is_dropped_and_corruption_elsewhere_is_refused(tmp_path):
    broker = DurableBroker(CONFIG, PROMPTS, run_dir=tmp_path, clock=Clock())
    drive(broker, np.random.default_rng(0), 3)
    expected = broker.status()
    broker.close()
    segment = sorted((tmp_path / JOURNAL_DIR).iterdir())[-1]
    data = segment.read_bytes()
    segment.write_bytes(data + data[:40])  # half a frame appended by a crash mid-write
    assert DurableBroker(CONFIG, PROMPTS, run_dir=tmp_path, clock=Clock()).status() == expected
    assert segment.read_bytes() == data  # truncated back to the last whole frame

    # A flipped byte in the middle cannot be a torn write: refuse to resume rather than resume wrongly.
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    (tmp_path / JOURNAL_DIR / "segment-00000000.journal").write_bytes(bytes(corrupted))
    (tmp_path / JOURNAL_DIR / "segment-00000001.journal").write_bytes(data[:0])
    with pytest.raises(JournalError, match="corrupted frame"):
        Journal(tmp_path / JOURNAL_DIR)


def test_resuming_with_other_settings_or_data_is_refused(tmp_path):
    DurableBroker(CONFIG, PROMPTS, run_dir=tmp_path, clock=Clock()).close()
    other = load_config(overrides={"algorithm.budget_tokens": 4000, "broker.max_pool_tokens": 20000})
    with pytest.raises(JournalError, match="same configuration and data"):
        DurableBroker(other, PROMPTS, run_dir=tmp_path, clock=Clock())
    with pytest.raises(JournalError, match="same configuration and data"):
        DurableBroker(CONFIG, PROMPTS[:50], run_dir=tmp_path, clock=Clock())


def test_segments_rotate_and_replay_across_them(tmp_path):
    journal = Journal(tmp_path, segment_bytes=200)
    for i in range(20):
        journal.append("version", float(i), {"version": i}, payload=b"x" * 50)
    journal.close()
    assert len(list(tmp_path.iterdir())) > 5
    reopened = Journal(tmp_path, segment_bytes=200)
    assert [e.args["version"] for e in reopened.replay()] == list(range(20))
    assert reopened.next_seq == 20


def test_delivery_cursor_rules(tmp_path):
    broker = DurableBroker(CONFIG, PROMPTS, run_dir=None, clock=Clock())
    with pytest.raises(BrokerError, match="next step to assemble is 0"):
        broker.train_batch(3)
    drive(broker, np.random.default_rng(0), 8)
    emitted = broker.core.steps_emitted
    assert broker.outbox_steps == list(range(emitted))
    broker.acknowledge(emitted - 1)
    assert broker.outbox_steps == []
    with pytest.raises(BrokerError, match="only"):
        broker.acknowledge(emitted + 5)
