"""A short run with every role as a Ray actor on an embedded local Ray cluster (the real launcher path)."""

from __future__ import annotations

import random

import pytest

from ring_async.system.inprocess import prompts_from_records
from ring_async.system.launcher import run_on_ray
from ring_async.tasks.math_tasks import math_task

from test_hosts import short_config
from test_learner import policy_dir  # noqa: F401  (fixture)


@pytest.mark.e2e
def test_a_short_run_on_local_ray(tmp_path, policy_dir):  # noqa: F811
    config = short_config(tmp_path)
    rng = random.Random(0)
    prompts = prompts_from_records([math_task(rng, 1) for _ in range(50)])
    result = run_on_ray(config, str(policy_dir), prompts, max_steps=2, timeout_s=300)
    assert sorted(e.role for e in result.endpoints) == ["broker", "generator", "learner", "verifier"]
    assert all(e.address.startswith("127.0.0.1:") for e in result.endpoints)
    assert result.learner["step"] == 2 and result.learner["last_step_metrics"]["loss_tokens"] == 96
    assert result.broker["steps_emitted"] == 2 and result.broker["policy_version"] == 2
    rollouts = result.broker["rollouts"]
    # The broker's accounting closes at the end of the run.
    outcomes = sum(v for k, v in rollouts.items() if k != "accepted")
    assert rollouts["accepted"] == outcomes + result.broker["pool_rollouts"] + result.broker["pending_rollouts"]
