"""The learner loop against the real (durable) broker, publishing to a real Generator server, and the Learner service.

Rollouts are synthetic (the generator's sampling is tested elsewhere); what is tested here is the learner's side of
the system: pull step k, train it, push version k+1 to the generator over gRPC, report it to the broker, checkpoint
on request and let the broker forget what the checkpoint holds.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
import torch

from _tiny_lm import one_torch_thread
from ring_async.broker.durable import DurableBroker
from ring_async.broker.prompts import Prompt
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.engines.generation import TorchEngine, TorchEngineCore
from ring_async.engines.generation.service import GeneratorService, serve_generator
from ring_async.engines.training import LearnerCore
from ring_async.engines.training.publisher import WeightPublisher
from ring_async.engines.training.service import LearnerLoop, LearnerService, LocalBatchSource, serve_learner
from ring_async.policy.model import load_policy
from ring_async.transport import check_health, open_channel
from ring_async.v1 import common_pb2, generator_pb2_grpc, learner_pb2_grpc

from test_learner import _config, policy_dir, vocab  # noqa: F401  (fixtures)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


async def feed(broker: DurableBroker, vocab: int, stop: asyncio.Event) -> None:
    """A stand-in generator: leases groups and submits scored synthetic rollouts of the broker's current version."""
    rng = np.random.default_rng(0)
    while not stop.is_set():
        lease = broker.lease("g0", 2)
        if lease.groups.num_rows:
            broker.submit(synthetic_rollouts(lease.groups, rng, LengthSpread(low=3, high=30, median=12),
                                             policy_version=broker.core.policy_version, prompt_tokens=5,
                                             vocab_size=vocab))
        await asyncio.sleep(0.01)


class GarbageFirst(LocalBatchSource):
    """Hands out corrupt bytes for the first request, then the broker's real batches."""

    def __init__(self, broker):
        super().__init__(broker)
        self.garbage_left = 1

    async def next_batch(self, step_id, learner_version, wait_s):
        if self.garbage_left:
            self.garbage_left -= 1
            return b"\x00garbage"
        return await super().next_batch(step_id, learner_version, wait_s)


def test_loop_trains_publishes_reports_and_checkpoints(tmp_path, policy_dir, vocab):  # noqa: F811
    config = _config(tmp_path, lr=1e-3)
    prompts = [Prompt(f"p{i}", f"prompt {i}", "math", answer="1") for i in range(100)]
    broker = DurableBroker(config, prompts, run_dir=tmp_path / "broker")
    learner = LearnerCore(config, policy_dir)
    engine = TorchEngine(TorchEngineCore(load_policy(policy_dir).model, max_batch_size=4))

    async def main():
        await engine.start()
        gen_server = await serve_generator(GeneratorService(engine))
        gen_channel = open_channel(gen_server.address)
        publisher = WeightPublisher({"g0": gen_channel}, bucket_bytes=64_000, timeout_s=30)
        steps = []
        loop = LearnerLoop(learner, GarbageFirst(broker), publisher, max_steps=3, retry_s=0.05,
                           on_step=lambda r: steps.append(r))
        server = await serve_learner(LearnerService(loop))
        channel = open_channel(server.address)
        stub = learner_pb2_grpc.LearnerStub(channel)
        stop = asyncio.Event()
        feeder = asyncio.create_task(feed(broker, vocab, stop))
        try:
            assert await check_health(channel) == "SERVING"
            running = asyncio.create_task(loop.run())
            statuses = []
            while not running.done():  # the event loop keeps answering while a step trains in a thread
                statuses.append(await stub.GetStatus(common_pb2.StatusRequest()))
                await asyncio.sleep(0.05)
            await running
            final = await stub.GetStatus(common_pb2.StatusRequest())
            gen = await generator_pb2_grpc.GeneratorStub(gen_channel).GetStatus(common_pb2.StatusRequest())

            with pytest.raises(grpc.aio.AioRpcError) as bad_tag:
                await stub.Checkpoint(common_pb2.CheckpointRequest(tag="../escape"))
            first, second = await asyncio.gather(stub.Checkpoint(common_pb2.CheckpointRequest(tag="manual")),
                                                 stub.Checkpoint(common_pb2.CheckpointRequest(tag="again")),
                                                 return_exceptions=True)
            after = await stub.GetStatus(common_pb2.StatusRequest())
            return steps, statuses, final, gen, bad_tag.value, first, second, after, loop.status
        finally:
            stop.set()
            await feeder
            await channel.close()
            await server.stop(0)
            await gen_channel.close()
            await gen_server.stop(0)
            await engine.close()

    steps, statuses, final, gen, bad_tag, first, second, after, loop_status = asyncio.run(main())
    assert [s.step_id for s in steps] == [0, 1, 2] and [s.policy_version for s in steps] == [1, 2, 3]
    assert all(s.metrics["loss_tokens"] == config.algorithm.budget_tokens for s in steps)
    assert loop_status.refused_batches == 1 and "step 0" in loop_status.last_error
    assert len(statuses) >= 1
    assert final.step == 3 and final.policy_version == 3 and final.last_consumed_step == 2
    assert final.last_step_metrics["loss_tokens"] == config.algorithm.budget_tokens
    assert final.last_checkpoint_step == -1 and final.tokens_per_s > 0
    # The generator serves exactly the learner's weights, as version 3; the broker knows version 3 too.
    assert gen.policy_version == 3 and loop_status.last_publish.generators == ["g0"]
    served = engine.core.model.state_dict()
    for name, tensor in learner.weights().items():
        assert torch.equal(served[name].cpu(), tensor), name
    assert broker.core.policy_version == 3
    # Checkpoints: a bad tag is INVALID_ARGUMENT; of two at once, one is written and the other refused.
    assert bad_tag.code() == grpc.StatusCode.INVALID_ARGUMENT
    replies = [r for r in (first, second) if not isinstance(r, BaseException)]
    refused = [r for r in (first, second) if isinstance(r, BaseException)]
    assert len(replies) == 1 and len(refused) == 1
    assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION and "already" in refused[0].details()
    assert replies[0].step == 3 and replies[0].last_consumed_step == 2
    assert after.last_checkpoint_step == 3
    # The broker forgot the steps the checkpoint holds.
    assert broker.acknowledged == 2 and broker.outbox_steps == []
