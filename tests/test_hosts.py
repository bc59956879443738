"""The four role hosts over real gRPC in one event loop: broker, verifier, generator and learner, with auth."""

from __future__ import annotations

import asyncio
import random
import urllib.request

import grpc
import pytest

from _tiny_lm import one_torch_thread
from ring_async.config import config_from_dict
from ring_async.control.client import ControlClient
from ring_async.system.inprocess import prompts_from_records
from ring_async.tasks.math_tasks import math_task
from ring_async.transport import open_channel
from ring_async.v1 import common_pb2, generator_pb2_grpc

from _system import running_system
from test_learner import policy_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


def short_config(tmp_path, **run):
    return config_from_dict({
        "run": {"run_dir": str(tmp_path / "run"), **run},
        # A random policy rarely earns a reward: keep zero-advantage groups so that steps can be assembled.
        "algorithm": {"budget_tokens": 96, "filter_zero_adv": False},
        "broker": {"group_size": 2, "max_pool_tokens": 1024, "expected_response_tokens": 16},
        "generation": {"max_tokens": 16, "max_batch_size": 8, "groups_per_lease": 2, "max_inflight_groups": 4,
                       "idle_wait_s": 0.1},
        "learner": {"device": "cpu", "batch_wait_s": 0.5},
    })




def test_hosts_train_over_grpc(tmp_path, policy_dir):  # noqa: F811
    config = short_config(tmp_path)
    rng = random.Random(0)
    prompts = prompts_from_records([math_task(rng, 1) for _ in range(50)])
    async def main():
        async with running_system(config, prompts, policy_dir, max_steps=3) as system:
            g = system.endpoints["generator"]
            async with ControlClient(system.control_address, system.control_token) as control:
                ids = await control.submit_prompts([{"prompt_id": "injected-1", "text": "What is 2 + 3?",
                                                     "reward_type": "math", "answer": "5", "priority": 10}])
                during = await control.status()
            async with ControlClient(system.control_address, "wrong-token") as intruder:
                with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                    await intruder.status()
            final = await asyncio.wait_for(system.learner.wait(), 240)
            async with open_channel(g.address, auth_token=system.token) as ch:
                gen_status = await generator_pb2_grpc.GeneratorStub(ch).GetStatus(common_pb2.StatusRequest())
            async with open_channel(g.address) as ch:  # no token: refused
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await generator_pb2_grpc.GeneratorStub(ch).GetStatus(common_pb2.StatusRequest())
            metrics = {role: urllib.request.urlopen(f"http://127.0.0.1:{e.metrics_port}/metrics").read().decode()
                       for role, e in system.endpoints.items()}
            return (final, gen_status, refused.value, metrics, system.broker.status(), ids, during,
                    unauthenticated.value)

    final, gen_status, refused, metrics, status, ids, during, unauthenticated = asyncio.run(main())
    assert ids == ["injected-1"] and unauthenticated.code() == grpc.StatusCode.UNAUTHENTICATED
    assert [x.generator_id for x in during.generators] == ["generator-0"]
    assert [x.learner_id for x in during.learners] == ["learner-0"]
    assert final["step"] == 3 and final["last_step_metrics"]["loss_tokens"] == 96
    assert gen_status.policy_version == 3 and gen_status.tokens_generated > 0
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert status["steps_emitted"] == 3 and status["policy_version"] == 3
    assert status["rollouts"]["trained"] > 0
    assert status["injected_rollouts"]["accepted"] >= 1  # the Control prompt, priority 10, was generated for
    assert "ring_async_broker_rollouts_total" in metrics["broker"]
    assert "ring_async_verifier_verdicts_total" in metrics["verifier"]
    assert "ring_async_generator_tokens_total" in metrics["generator"]
    assert "ring_async_learner_steps_total" in metrics["learner"]


def test_prompts_from_control_scored_by_an_external_reward_model_are_trained_on_and_reported(
        tmp_path, policy_dir):  # noqa: F811
    """No dataset: only prompts a Control client submits, each scored by an external reward model through
    StreamRollouts + SubmitRewards. Their rows reach the broker only through those rewards, every trained row comes
    from them, and the broker reports their outcomes (its status, Control's status, /metrics)."""
    config = short_config(tmp_path)

    async def reward_model(control: ControlClient, rewarded: list[str]) -> None:
        async for batch in control.stream_rollouts(pending_external_only=True):
            ids = batch.column("rollout_id").to_pylist()
            # 1 for even samples, 0 for odd ones: the two halves of a group differ, so its advantages are not zero.
            await control.submit_rewards({rid: float(int(rid.rsplit("/", 1)[1]) % 2 == 0) for rid in ids})
            rewarded.extend(ids)

    async def main():
        rewarded: list[str] = []
        # No dataset: generators wait for injected prompts.
        async with running_system(config, [], policy_dir, max_steps=2) as system:
            async with ControlClient(system.control_address, system.control_token) as control:
                model = asyncio.create_task(reward_model(control, rewarded))
                ids = await control.submit_prompts([{"prompt_id": f"rate-{i}", "text": f"Say something kind, take {i}.",
                                                     "reward_type": "external"} for i in range(40)])
                final = await asyncio.wait_for(system.learner.wait(), 240)
                reported = await control.status()
                model.cancel()
            port = system.endpoints["broker"].metrics_port
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            return ids, final, system.broker.status(), reported, rewarded, metrics

    ids, final, status, reported, rewarded, metrics = asyncio.run(main())
    assert ids == [f"rate-{i}" for i in range(40)] and final["step"] == 2
    injected = status["injected_rollouts"]
    # Only the reward model's scores let these rows into the broker: each accepted row is one it rewarded.
    assert 0 < status["rollouts"]["accepted"] <= len(set(rewarded))
    assert injected["accepted"] == status["rollouts"]["accepted"]
    assert injected["trained"] == status["rollouts"]["trained"] > 0
    # Reported through Control too (read after the last step: nothing more is trained, though rows still arrive).
    assert reported.broker.injected_rollouts_by_outcome["trained"] == injected["trained"]
    assert 0 < reported.broker.injected_rollouts_by_outcome["accepted"] <= injected["accepted"]
    assert f'ring_async_broker_injected_rollouts_total{{instance="broker",outcome="trained",role="broker"}} ' \
           f'{float(injected["trained"])}' in metrics
