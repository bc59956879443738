"""The Generator gRPC service over loopback, and the generation loop against the real broker core, in process."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import msgpack
import pyarrow as pa
import pytest

from _tiny_lm import byte_tokenizer, one_torch_thread, tiny_moe
from ring_async.broker.core import Broker
from ring_async.broker.prompts import Prompt
from ring_async.config import GenerationConfig, load_config
from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT
from ring_async.engines.generation import TorchEngine, TorchEngineCore, iter_buckets
from ring_async.engines.generation.loop import GenerationLoop
from ring_async.engines.generation.service import GeneratorService, bucket_to_chunk, push_weights, serve_generator
from ring_async.tasks.answers import boxed_matches
from ring_async.data.schemas import PROMPT_GROUP
from ring_async.engines.generation.clients import GrpcBrokerClient, VerifyThenSubmit
from ring_async.transport import open_channel, pack_batch, start_server, unpack_batch
from ring_async.v1 import broker_pb2, broker_pb2_grpc, common_pb2, generator_pb2_grpc, verifier_pb2, verifier_pb2_grpc


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


def run(coro):
    return asyncio.run(coro)


class Served:
    """A torch engine behind a real Generator server on 127.0.0.1, and a stub to call it."""

    def __init__(self, loop: GenerationLoop | None = None, engine: TorchEngine | None = None, timeout_s: float = 30.0):
        self.engine = engine or TorchEngine(TorchEngineCore(tiny_moe(seed=0), max_batch_size=8))
        self.service = GeneratorService(self.engine, loop, weight_update_timeout_s=timeout_s)

    async def __aenter__(self):
        await self.engine.start()
        self.server = await serve_generator(self.service)
        self.channel = open_channel(self.server.address)
        self.stub = generator_pb2_grpc.GeneratorStub(self.channel)
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self.server.stop(0)
        await self.engine.close()


# ------------------------------------------------------------------------------------------ UpdateWeights


def test_weights_update_over_loopback_grpc():
    donor = tiny_moe(seed=1)

    async def main():
        async with Served() as served:
            reply = await push_weights(served.stub, donor, version=1, bucket_bytes=20_000)
            status = await served.stub.GetStatus(common_pb2.StatusRequest())
            return reply, status, served.engine.core.model

    reply, status, model = run(main())
    assert reply.policy_version == 1 and reply.buckets > 3 and 0 < reply.load_s < 10
    assert reply.tensors == len(list(iter_buckets(donor, 1, 10**9))[0].tensor_names)
    assert status.policy_version == 1 and status.weight_updates == 1 and status.engine == "torch"
    assert all(a.equal(b) for a, b in zip(model.state_dict().values(), donor.state_dict().values()))


def test_a_bad_bucket_is_refused_with_invalid_argument_and_the_old_weights_stay():
    buckets = list(iter_buckets(tiny_moe(seed=1), version=1, bucket_bytes=20_000))
    flipped = bytearray(buckets[1].payload)
    flipped[-3] ^= 0x01
    bad = [buckets[0], dataclasses.replace(buckets[1], payload=bytes(flipped)), *buckets[2:]]

    async def main():
        async with Served() as served:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await push_weights(served.stub, bad)
            stale = list(iter_buckets(tiny_moe(seed=1), version=0))
            with pytest.raises(grpc.aio.AioRpcError) as old:
                await push_weights(served.stub, stale)
            status = await served.stub.GetStatus(common_pb2.StatusRequest())
            samples = await served.engine.generate([_request("after")])
            return refused.value, old.value, status, samples

    refused, old, status, samples = run(main())
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bucket 2/" in refused.details() and "checksum mismatch" in refused.details()
    assert old.code() == grpc.StatusCode.FAILED_PRECONDITION and "not newer" in old.details()
    assert status.policy_version == 0 and status.weight_updates == 0 and status.weight_updates_refused == 2
    assert samples[0].policy_version_last == 0  # still serving


def test_a_stalled_upload_fails_with_deadline_exceeded():
    buckets = list(iter_buckets(tiny_moe(seed=1), version=1, bucket_bytes=20_000))

    async def stalled():
        yield bucket_to_chunk(buckets[0])
        await asyncio.sleep(10)

    async def main():
        async with Served(timeout_s=0.3) as served:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await served.stub.UpdateWeights(stalled(), timeout=20)
            return err.value, await served.stub.GetStatus(common_pb2.StatusRequest())

    err, status = run(main())
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "timed out" in err.details() and "still serving version 0" in err.details()
    assert status.policy_version == 0


# ------------------------------------------------------------------------------------------ the generation loop


def _request(group_id: str):
    from ring_async.engines.generation import GroupRequest, SamplingParams

    return GroupRequest(group_id, "p", [5, 6, 7], SamplingParams(max_tokens=4))


def _broker(prompts: int, max_staleness: int = 4, filter_zero_adv: bool = True, **broker) -> Broker:
    config = load_config(overrides={
        "algorithm.budget_tokens": 64, "algorithm.max_staleness": max_staleness,
        "algorithm.filter_zero_adv": filter_zero_adv, "broker.group_size": 2,
        "broker.expected_response_tokens": 8, "broker.shuffle_prompts": False,
        **{f"broker.{k}": v for k, v in broker.items()},
    })
    tasks = [Prompt(f"p{i}", f"What is {i} + {i}?", "math", answer=str(2 * i)) for i in range(prompts)]
    return Broker(config, tasks)


class BoxedVerifier:
    """Scores forwarded rollouts the way the math verifier does (the boxed answer against the prompt's answer,
    both read from the rollout's metadata) and submits them to the broker."""

    def __init__(self, broker: Broker):
        self.broker = broker
        self.batches: list[pa.RecordBatch] = []

    def __call__(self, rollouts: pa.RecordBatch) -> None:
        rollouts = codec.decode(codec.encode(rollouts, ROLLOUT), ROLLOUT)  # as it would arrive over the wire
        self.batches.append(rollouts)
        self.broker.submit(score(rollouts))


def score(rollouts: pa.RecordBatch) -> pa.RecordBatch:
    meta = [msgpack.unpackb(m) for m in rollouts.column("metadata").to_pylist()]
    rewards = [float(boxed_matches(m["response_text"], m["answer"])) for m in meta]
    verdicts = ["correct" if r else "incorrect" for r in rewards]
    schema = rollouts.schema
    return rollouts.set_column(
        schema.get_field_index("reward"), schema.field("reward"), pa.array(rewards, pa.float32())
    ).set_column(schema.get_field_index("verdict"), schema.field("verdict"), pa.array(verdicts))


def _loop(broker, verifier, max_staleness: int | None = None, **generation) -> tuple[GenerationLoop, TorchEngine]:
    tokenizer = byte_tokenizer()
    engine = TorchEngine(TorchEngineCore(tiny_moe(seed=0), tokenizer, max_batch_size=4))
    settings = dict(max_tokens=12, groups_per_lease=2, max_inflight_groups=4, idle_wait_s=0.05,
                    backpressure_wait_s=0.05)
    config = GenerationConfig(**{**settings, **generation})
    tokenize = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    return GenerationLoop(engine, broker, verifier, config=config, tokenize=tokenize, tokenizer=tokenizer,
                          max_staleness=max_staleness), engine


def test_the_loop_leases_generates_forwards_and_every_rollout_is_accounted_for():
    broker = _broker(prompts=6)
    verifier = BoxedVerifier(broker)
    loop, engine = _loop(broker, verifier)

    async def main():
        async with engine:
            return await asyncio.wait_for(loop.run(max_groups=6), 60)

    status = run(main())
    rows = sum(b.num_rows for b in verifier.batches)
    assert status.groups_leased == status.groups_completed == 6
    assert status.rollouts_forwarded == rows == 12 and status.inflight_groups == 0
    assert broker.ledger.accepted_rollouts == 12 and broker.leased_groups == 0
    assert broker.closure() == {"rollouts": 0, "tokens": 0}
    # Groups are forwarded whole: every group in exactly one forward, with both of its samples.
    forwards = [b.column("group_id").to_pylist() for b in verifier.batches]
    groups = [group for ids in forwards for group in set(ids)]
    assert len(groups) == len(set(groups)) == 6 and all(ids.count(g) == 2 for ids in forwards for g in ids)
    first = verifier.batches[0]
    assert set(first.column("verdict").to_pylist()) == {"pending"} and first.column("reward").null_count == first.num_rows
    meta = msgpack.unpackb(first.column("metadata")[0].as_py())
    assert meta["answer"] is not None and isinstance(meta["response_text"], str)


def test_the_loop_backs_off_under_backpressure_and_still_finishes_its_groups():
    broker = _broker(prompts=8, max_inflight_groups=2)  # the broker refuses a third open group
    verifier = BoxedVerifier(broker)
    loop, engine = _loop(broker, verifier)
    calls = []
    original = broker.lease

    def counting_lease(generator_id, max_groups):
        result = original(generator_id, max_groups)
        calls.append((broker.leased_groups, result.backpressure))
        return result

    broker.lease = counting_lease

    async def main():
        async with engine:
            return await asyncio.wait_for(loop.run(max_groups=8), 60)

    status = run(main())
    assert status.backpressure_events >= 1
    assert all(open_groups <= 2 for open_groups, _ in calls)
    assert status.groups_completed == 8 and broker.closure() == {"rollouts": 0, "tokens": 0}


def test_pause_over_grpc_stops_leasing_and_resume_restarts_it():
    broker = _broker(prompts=50)
    verifier = BoxedVerifier(broker)
    loop, engine = _loop(broker, verifier)

    async def main():
        async with Served(loop=loop, engine=engine) as served:
            state = await served.stub.Pause(common_pb2.PauseRequest(reason="sync mode: learner step 3"))
            assert state.paused and state.reason == "sync mode: learner step 3" and state.paused_at_unix_s > 0
            stop = asyncio.Event()
            task = asyncio.create_task(loop.run(stop))
            await asyncio.sleep(0.3)
            leased_while_paused = loop.groups_leased
            resumed = await served.stub.Resume(common_pb2.ResumeRequest())
            while loop.groups_completed < 4:
                await asyncio.sleep(0.02)
            status = await served.stub.GetStatus(common_pb2.StatusRequest())
            stop.set()
            await task
            return leased_while_paused, resumed, status

    leased_while_paused, resumed, status = run(main())
    assert leased_while_paused == 0
    assert not resumed.paused and resumed.reason == ""
    assert status.rollouts_generated >= 8 and status.tokens_generated > 0 and status.tokens_per_s > 0
    assert status.generator_id == "generator-0" and not status.pause.paused


def test_a_weight_update_during_the_loop_is_recorded_in_the_rollouts():
    broker = _broker(prompts=40)
    verifier = BoxedVerifier(broker)
    loop, engine = _loop(broker, verifier, max_tokens=40)
    donor = tiny_moe(seed=1)

    async def main():
        async with Served(loop=loop, engine=engine) as served:
            stop = asyncio.Event()
            task = asyncio.create_task(loop.run(stop))
            while engine.core.meter.total < 30:
                await asyncio.sleep(0.01)
            await push_weights(served.stub, donor, version=1)
            done_before = loop.groups_completed
            while loop.groups_completed < done_before + 6:
                await asyncio.sleep(0.02)
            stop.set()
            await task

    run(main())
    rows = pa.Table.from_batches(verifier.batches)
    first = rows.column("policy_version_first").to_pylist()
    last = rows.column("policy_version_last").to_pylist()
    assert (0, 1) in set(zip(first, last))  # decoded across the update, and says so
    assert (1, 1) in set(zip(first, last))  # started after it
    assert all(f <= l for f, l in zip(first, last))


def test_samples_a_new_version_makes_stale_are_stopped_masked_and_counted_stale():
    from ring_async.verifiers.core import VerifierCore
    from ring_async.verifiers.service import rollouts_to_score, with_results

    # Every group counts, whatever its rewards: the ledger's stale count is then exact. No learner takes steps here,
    # so the broker's staleness hold (one step's worth at max_staleness 0) would stop leasing before 12 groups.
    broker = _broker(prompts=12, max_staleness=0, filter_zero_adv=False, lease_within_staleness=False)
    verifier = VerifierCore()
    forwarded: list[dict] = []

    async def verify_then_submit(rollouts: pa.RecordBatch) -> None:  # what the verifier service does
        scored = with_results(rollouts, await verifier.score(rollouts_to_score(rollouts)))
        forwarded.extend(scored.to_pylist())
        broker.submit(scored)

    loop, engine = _loop(broker, verify_then_submit, max_tokens=120, max_staleness=0)

    async def main():
        async with Served(loop=loop, engine=engine) as served:
            task = asyncio.create_task(loop.run(max_groups=12))
            while engine.core.meter.total < 30:
                await asyncio.sleep(0.01)
            # As the learner publishes: the generator loads the version first, then the broker is told.
            await push_weights(served.stub, tiny_moe(seed=1), version=1)
            broker.set_policy_version(1)
            status = await task
        await verifier.close()
        return status

    status = run(asyncio.wait_for(main(), 120))
    stopped = [r for r in forwarded if r["finish_reason"] == "abort"]
    assert stopped and status.stale_aborted == len(stopped) and status.groups_completed == 12
    # Stopped mid-decode: begun under version 0, what they generated kept, masked without being scored.
    assert all(r["policy_version_first"] == 0 and 0 < len(r["response_token_ids"]) < 120 for r in stopped)
    assert all(r["verdict"] == "unverifiable" and r["reward"] is None for r in stopped)
    # The broker counts every rollout begun under version 0 stale, the stopped ones included; nothing is lost.
    old = [r for r in forwarded if r["policy_version_first"] == 0]
    assert broker.ledger.rollouts["stale"] == len(old) and broker.ledger.rollouts["unverifiable"] == 0
    assert any(r["policy_version_first"] == 1 for r in forwarded)
    assert broker.closure() == {"rollouts": 0, "tokens": 0}


# ------------------------------------------------------------------------------------------ over the peers' services


class BrokerOverCore(broker_pb2_grpc.BrokerServicer):
    """Broker.LeasePrompts and SubmitRollouts answered by the real broker core (the transport shim only)."""

    def __init__(self, broker: Broker):
        self.broker = broker

    async def LeasePrompts(self, request, context):
        lease = self.broker.lease(request.generator_id, request.max_groups)
        return broker_pb2.LeaseReply(
            groups=pack_batch(lease.groups, PROMPT_GROUP), backpressure=lease.backpressure,
            policy_version=lease.policy_version, prompts_exhausted=self.broker.prompts_exhausted,
        )

    async def SubmitRollouts(self, request, context):
        result = self.broker.submit(unpack_batch(request.rollouts, ROLLOUT))
        return broker_pb2.SubmitRolloutsReply(accepted=result.accepted, duplicates=result.duplicates, late=result.late)


class ScoringVerifier(verifier_pb2_grpc.VerifierServicer):
    async def Verify(self, request, context):
        scored = score(unpack_batch(request.rollouts, ROLLOUT))
        return verifier_pb2.VerifyReply(rollouts=pack_batch(scored, ROLLOUT))


def test_the_loop_leases_and_forwards_over_grpc():
    broker = _broker(prompts=4)
    tokenizer = byte_tokenizer()

    async def main():
        server = await start_server([BrokerOverCore(broker), ScoringVerifier()])
        channel = open_channel(server.address)
        engine = TorchEngine(TorchEngineCore(tiny_moe(seed=0), tokenizer, max_batch_size=4))
        loop = GenerationLoop(
            engine,
            GrpcBrokerClient(channel, policy_version=lambda: engine.policy_version),
            VerifyThenSubmit(channel, channel, "generator-0"),
            config=GenerationConfig(max_tokens=8, groups_per_lease=2, idle_wait_s=0.05),
            tokenize=lambda text: tokenizer.encode(text, add_special_tokens=False),
            tokenizer=tokenizer,
        )
        try:
            async with engine:
                return await asyncio.wait_for(loop.run(max_groups=4), 60)
        finally:
            await channel.close()
            await server.stop(0)

    status = run(main())
    assert status.groups_completed == 4 and status.rollouts_forwarded == 8 and status.forward_errors == 0
    assert broker.ledger.accepted_rollouts == 8 and broker.closure() == {"rollouts": 0, "tokens": 0}


def test_a_group_the_engine_cannot_serve_closes_with_aborted_samples():
    broker = _broker(prompts=2)
    broker.inject([Prompt("too-long", "x" * 400, "math", answer="0", priority=5)])  # > the model's 256 positions
    verifier = BoxedVerifier(broker)
    loop, engine = _loop(broker, verifier)

    async def main():
        async with engine:
            return await asyncio.wait_for(loop.run(max_groups=3), 60)

    status = run(main())
    rows = pa.Table.from_batches(verifier.batches)
    aborted = [r for r in rows.to_pylist() if r["prompt_id"] == "too-long"]
    assert status.refused_groups == 1 and status.groups_completed == 3
    assert len(aborted) == 2 and all(r["finish_reason"] == "abort" and r["response_token_ids"] == [] for r in aborted)
    assert broker.leased_groups == 0 and broker.closure() == {"rollouts": 0, "tokens": 0}
