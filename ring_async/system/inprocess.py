"""The whole RL loop in one process: the same cores the actors host, wired by direct calls instead of gRPC.

broker core → generation loop (torch engine) → verifier core → broker → learner core → weights into the engine.
Generation and training overlap (``run.mode: async``): the learner trains in a worker thread while the engine keeps
decoding; in ``sync`` mode the broker makes them take turns (it emits a step only once nothing is being generated,
and leases nothing until the learner reports the version that step produced). Nothing here knows about Ray or the
network, which makes it the quickest way to check that a configuration learns, and the reference the distributed run is
compared against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import pyarrow as pa

from ring_async.broker.core import Broker
from ring_async.broker.prompts import Prompt
from ring_async.config import RingConfig
from ring_async.engines.generation.factory import build_engine
from ring_async.engines.generation.loop import GenerationLoop
from ring_async.engines.generation.rollouts import chat_tokenizer
from ring_async.engines.generation.weights import iter_buckets
from ring_async.engines.training import LearnerCore, StepResult
from ring_async.tasks.record import TaskRecord
from ring_async.verifiers.core import VerifierCore
from ring_async.verifiers.service import rollouts_to_score, with_results

log = logging.getLogger(__name__)


def prompts_from_records(records: Sequence[TaskRecord]) -> list[Prompt]:
    """Broker prompts for task records (the answer or tests travel with the prompt to the verifier)."""
    import json

    return [Prompt(prompt_id=r.id or f"task-{i}", prompt=r.prompt, reward_type=r.reward_type, answer=r.answer,
                   tests=json.dumps(r.tests) if r.tests is not None else None)
            for i, r in enumerate(records)]


@dataclass
class InProcessResult:
    steps: list[StepResult] = field(default_factory=list)
    wall_s: float = 0.0
    generated_tokens: int = 0
    broker_status: dict = field(default_factory=dict)


async def run_inprocess(
    config: RingConfig,
    policy_path: str | Path,
    records: Sequence[TaskRecord],
    *,
    max_steps: int | None = None,
    time_budget_s: float | None = None,
    learner: LearnerCore | None = None,
    on_step: Callable[[StepResult], Awaitable[None] | None] | None = None,
) -> InProcessResult:
    """Train until ``max_steps`` optimizer steps or ``time_budget_s`` seconds, whichever comes first."""
    if max_steps is None and time_budget_s is None:
        raise ValueError("run_inprocess needs max_steps or time_budget_s")
    started = time.monotonic()
    broker = Broker(config, prompts_from_records(records))
    learner = learner or LearnerCore(config, policy_path)
    engine = build_engine(config, policy_path, policy_version=learner.policy_version)
    broker.set_policy_version(learner.policy_version)
    verifier = VerifierCore()

    async def forward(rollouts: pa.RecordBatch) -> None:
        results = await verifier.score(rollouts_to_score(rollouts))
        broker.submit(with_results(rollouts, results))

    generation = GenerationLoop(engine, broker, forward, config=config.generation,
                                tokenize=chat_tokenizer(learner.tokenizer), tokenizer=learner.tokenizer,
                                max_staleness=config.algorithm.max_staleness)
    stop = asyncio.Event()
    result = InProcessResult()

    def out_of_time() -> bool:
        return time_budget_s is not None and time.monotonic() - started >= time_budget_s

    async def train(gen_task: asyncio.Task) -> None:
        while (max_steps is None or len(result.steps) < max_steps) and not out_of_time():
            batch = broker.next_batch()
            if batch is None:
                if gen_task.done():  # generation died: no batch will ever come
                    gen_task.result()
                    raise RuntimeError("generation stopped before the run was over")
                if generation.refused_groups and not generation.groups_completed:
                    raise RuntimeError(f"the generator refused all {generation.refused_groups} groups it leased")
                await asyncio.sleep(0.05)
                continue
            step = await asyncio.to_thread(learner.train_step, batch)
            weights = learner.weights()

            async def buckets():
                for bucket in iter_buckets(weights, step.policy_version, config.generation.weight_bucket_bytes):
                    yield bucket

            await engine.update_weights(buckets(), timeout_s=config.generation.weight_update_timeout_s)
            generation.abort_stale()
            broker.set_policy_version(step.policy_version)
            result.steps.append(step)
            if on_step is not None:
                maybe = on_step(step)
                if asyncio.iscoroutine(maybe):
                    await maybe

    await engine.start()
    try:
        gen_task = asyncio.create_task(generation.run(stop))
        try:
            await train(gen_task)
        finally:
            stop.set()
            await gen_task
    finally:
        await engine.close()
        await verifier.close()
    result.wall_s = time.monotonic() - started
    result.generated_tokens = engine.stats().generated_tokens
    result.broker_status = broker.status()
    return result
