"""Prometheus metrics read from the real cores at scrape time, served over HTTP and parsed back."""

from __future__ import annotations

import asyncio
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from _tiny_lm import one_torch_thread, tiny_moe
from ring_async.broker.durable import DurableBroker
from ring_async.broker.prompts import Prompt
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.engines.generation import TorchEngine, TorchEngineCore
from ring_async.engines.training import LearnerCore
from ring_async.engines.training.service import LearnerLoop, LocalBatchSource
from ring_async.metrics import (
    BrokerCollector,
    GeneratorCollector,
    LearnerCollector,
    StepMetrics,
    VerifierCollector,
    serve_metrics,
)
from ring_async.verifiers.core import RolloutToScore, VerifierCore

from test_learner import _config, policy_dir, vocab  # noqa: F401  (fixtures)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    hits = [v for (n, lb), v in samples.items() if n == name and all(dict(lb).get(k) == w for k, w in labels.items())]
    assert len(hits) == 1, f"{name} {labels}: {len(hits)} samples"
    return hits[0]


def test_every_role_exports_its_state(tmp_path, policy_dir, vocab):  # noqa: F811
    config = _config(tmp_path)
    broker = DurableBroker(config, [Prompt(f"p{i}", "q", "math", answer="1") for i in range(50)])
    learner = LearnerCore(config, policy_dir)
    loop = LearnerLoop(learner, LocalBatchSource(broker), max_steps=2)
    verifier = VerifierCore()
    engine = TorchEngine(TorchEngineCore(tiny_moe(seed=0), max_batch_size=4))

    registry = CollectorRegistry()
    steps = StepMetrics(registry)
    loop.on_step = lambda result: steps.observe(result.metrics)
    for collector in (BrokerCollector(broker.status), LearnerCollector(loop.snapshot),
                      VerifierCollector(verifier.stats), GeneratorCollector(engine.stats)):
        registry.register(collector)
    server, port = serve_metrics(registry)

    async def main():
        rng = np.random.default_rng(0)
        stop = asyncio.Event()

        async def feed():
            while not stop.is_set():
                lease = broker.lease("g0", 2)
                if lease.groups.num_rows:
                    broker.submit(synthetic_rollouts(lease.groups, rng, LengthSpread(low=3, high=30, median=12),
                                                     policy_version=broker.core.policy_version, prompt_tokens=5,
                                                     vocab_size=vocab))
                await asyncio.sleep(0.01)

        feeder = asyncio.create_task(feed())
        await loop.run()
        stop.set()
        await feeder
        await verifier.score([RolloutToScore("r1", "math", r"so \boxed{3}", answer="3"),
                              RolloutToScore("r2", "math", r"so \boxed{4}", answer="3")])
        await verifier.close()

    try:
        asyncio.run(main())
        samples = scrape(port)
    finally:
        server.shutdown()

    status = broker.status()
    assert value(samples, "ring_async_broker_rollouts_total", outcome="accepted") == status["rollouts"]["accepted"]
    assert value(samples, "ring_async_broker_tokens_total", outcome="trained") == 2 * config.algorithm.budget_tokens
    assert value(samples, "ring_async_broker_steps_emitted_total") == 2
    assert value(samples, "ring_async_broker_policy_version", role="broker") == 2
    assert value(samples, "ring_async_learner_steps_total", role="learner", instance="learner-0") == 2
    assert value(samples, "ring_async_learner_loss_tokens") == config.algorithm.budget_tokens
    assert value(samples, "ring_async_learner_grad_norm") > 0
    assert value(samples, "ring_async_learner_step_seconds_count") == 2
    assert value(samples, "ring_async_learner_row_staleness_count") == status["rollouts"]["trained"]  # one per row
    assert value(samples, "ring_async_verifier_verdicts_total", reward_type="math", verdict="correct") == 1
    assert value(samples, "ring_async_verifier_verdicts_total", reward_type="math", verdict="incorrect") == 1
    assert value(samples, "ring_async_generator_policy_version", role="generator") == 0
    assert value(samples, "ring_async_generator_tokens_total") == 0


def test_staleness_bound_pause_state_and_loop_errors_are_exported():
    from ring_async.engines.generation.loop import LoopStatus, PauseInfo
    from ring_async.engines.generation.types import EngineStats

    status = {"rollouts": {"accepted": 4}, "tokens": {"accepted": 40}, "rejected_rollouts": {}, "steps_emitted": 1,
              "policy_version": 5, "queued_prompts": 0, "leased_groups": 1, "pool_tokens": 12, "pool_rollouts": 2,
              "pending_rollouts": 0}
    stats = EngineStats(engine="torch", policy_version=4, running=0, waiting=0, paused=False, completed_samples=3,
                        generated_tokens=30, tokens_per_s=0.0, weight_updates=4, refused_weight_updates=1)
    loop = LoopStatus(generator_id="generator-3", inflight_groups=2, groups_leased=9, groups_completed=7,
                      rollouts_forwarded=14, forward_errors=1, lease_errors=3, refused_groups=0,
                      stale_aborted=6, backpressure_events=0, backpressure=False, broker_policy_version=5,
                      pause=PauseInfo(True, "maintenance", 1.0))
    registry = CollectorRegistry()
    registry.register(BrokerCollector(lambda: status, max_staleness=2, pool_staleness=lambda: 3))
    registry.register(GeneratorCollector(lambda: stats, "generator-3", loop_status=lambda: loop))
    server, port = serve_metrics(registry)
    try:
        samples = scrape(port)
    finally:
        server.shutdown()
    assert value(samples, "ring_async_broker_max_staleness", role="broker") == 2
    assert value(samples, "ring_async_broker_pool_staleness", role="broker") == 3
    assert value(samples, "ring_async_generator_paused", instance="generator-3") == 1
    assert value(samples, "ring_async_generator_inflight_groups") == 2
    assert value(samples, "ring_async_generator_lease_errors_total") == 3
    assert value(samples, "ring_async_generator_forward_errors_total") == 1
    assert value(samples, "ring_async_generator_stale_aborted_total") == 6
    assert value(samples, "ring_async_generator_weight_updates_refused_total") == 1


def test_the_metrics_server_answers_prometheus_service_discovery_on_targets():
    import json
    from types import SimpleNamespace

    from ring_async.metrics import sd_targets

    endpoints = [SimpleNamespace(role="broker", instance="broker", address="10.0.0.5:40001", metrics_port=9400),
                 SimpleNamespace(role="generator", instance="generator-0", address="10.0.0.7:40002",
                                 metrics_port=35123)]
    registry = CollectorRegistry()
    registry.register(BrokerCollector(lambda: {"rollouts": {}, "tokens": {}, "rejected_rollouts": {},
                                               "steps_emitted": 0, "policy_version": 0, "queued_prompts": 0,
                                               "leased_groups": 0, "pool_tokens": 0, "pool_rollouts": 0,
                                               "pending_rollouts": 0}))
    server, port = serve_metrics(registry, targets=lambda: sd_targets(endpoints))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/targets", timeout=10) as reply:
            assert reply.headers["Content-Type"] == "application/json"
            groups = json.loads(reply.read())
        samples = scrape(port)  # /metrics is still the exposition
    finally:
        server.shutdown()
    assert groups == [{"targets": ["10.0.0.5:9400"], "labels": {"role": "broker", "instance": "broker"}},
                      {"targets": ["10.0.0.7:35123"], "labels": {"role": "generator", "instance": "generator-0"}}]
    assert value(samples, "ring_async_broker_steps_emitted_total") == 0
