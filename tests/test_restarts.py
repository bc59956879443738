"""Roles survive their processes dying: Ray restarts the actor, the supervisor starts it again and re-wires peers."""

from __future__ import annotations

import random
import threading
import time

import pytest

from _tiny_lm import one_torch_thread
from ring_async.system.hosts import read_steps
from ring_async.system.inprocess import prompts_from_records
from ring_async.system.launcher import actor_name, run_on_ray
from ring_async.tasks.math_tasks import math_task

from test_hosts import short_config
from test_learner import policy_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


@pytest.mark.e2e
def test_killed_roles_come_back_and_the_run_finishes_exactly(tmp_path, policy_dir):  # noqa: F811
    import ray

    config = short_config(tmp_path)
    config = config.model_copy(update={"learner": config.learner.model_copy(update={"checkpoint_every_steps": 1})})
    run_dir = tmp_path / "run"
    rng = random.Random(0)
    prompts = prompts_from_records([math_task(rng, 1) for _ in range(60)])
    # After step 1 the generator dies, after step 2 the verifier and the broker, after step 3 the learner.
    plan = [(1, ["generator-0"]), (2, ["verifier-0", "broker"]), (3, ["learner-0"])]
    killed: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def killer() -> None:
        try:
            for after, names in plan:
                while len(read_steps(run_dir)) < after:
                    time.sleep(0.2)
                for name in names:
                    ray.kill(ray.get_actor(actor_name(config, name)), no_restart=False)
                    killed.append((after, name))
        except BaseException as err:  # noqa: BLE001 - reported by the test below
            errors.append(err)

    def on_started(_result) -> None:
        threading.Thread(target=killer, daemon=True).start()

    result = run_on_ray(config, str(policy_dir), prompts, max_steps=5, progress=False, timeout_s=900,
                        on_started=on_started)
    assert not errors, errors
    assert [name for _, name in killed] == ["generator-0", "verifier-0", "broker", "learner-0"]
    assert result.restarts == {"generator-0": 1, "verifier-0": 1, "broker": 1, "learner-0": 1}
    assert result.learner["step"] == 5
    steps = read_steps(run_dir)
    # The restarted learner resumed from its checkpoint: every step 1..5 was trained (a step the dead one was
    # taking is trained again, on the very batch the broker re-delivered), each with exactly Φ loss tokens.
    assert sorted({s["step"] for s in steps}) == [1, 2, 3, 4, 5]
    assert all(s["loss_tokens"] == 96 for s in steps)
    by_step = {}
    for s in steps:
        by_step.setdefault(s["step_id"], []).append(s)
    for again in by_step.values():  # the same batch trained twice gives the same numbers
        assert len({round(s["reward_mean"], 6) for s in again}) == 1
    assert result.broker["steps_emitted"] >= 5
    # The restarted generator's loop answered at the end: it generated the rollouts of the steps after its restart.
    assert set(result.generators) == {"generator-0"} and result.generators["generator-0"]["groups_completed"] > 0
    assert (run_dir / "checkpoints" / "latest").is_file()
