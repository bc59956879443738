"""The whole RL loop in one process: broker → torch engine → verifier → broker → learner → weights → engine."""

from __future__ import annotations

import asyncio
import random

import pytest

from _tiny_lm import one_torch_thread
from ring_async.config import config_from_dict
from ring_async.system.inprocess import run_inprocess
from ring_async.tasks.math_tasks import math_task

from test_learner import policy_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_steps_flow_through_every_core(tmp_path, policy_dir, mode):  # noqa: F811
    config = config_from_dict({
        "run": {"run_dir": str(tmp_path / "run"), "mode": mode},
        # A random policy rarely gets a reward: keep zero-advantage groups so steps can be assembled.
        "algorithm": {"budget_tokens": 96, "filter_zero_adv": False, "max_staleness": 0 if mode == "sync" else 1},
        "broker": {"group_size": 2, "max_pool_tokens": 1024, "expected_response_tokens": 16},
        "generation": {"max_tokens": 16, "max_batch_size": 8, "groups_per_lease": 2, "max_inflight_groups": 4},
        "learner": {"device": "cpu"},
    })
    rng = random.Random(0)
    records = [math_task(rng, 1) for _ in range(50)]
    versions = []
    result = asyncio.run(run_inprocess(config, policy_dir, records, max_steps=3,
                                       on_step=lambda s: versions.append(s.policy_version)))
    assert versions == [1, 2, 3]
    assert all(s.metrics["loss_tokens"] == 96 for s in result.steps)
    # At least what was trained; with the broker's staleness hold, often exactly that (nothing left to go stale).
    assert result.generated_tokens >= 3 * 96
    closure = result.broker_status
    assert closure["policy_version"] == 3 and closure["steps_emitted"] == 3
    if mode == "sync":
        assert all(s.metrics["staleness_max"] == 0 for s in result.steps)
