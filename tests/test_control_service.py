"""The Control service over real servers on 127.0.0.1, through ControlClient.

Control runs with the broker in process (a DurableBroker journaling into tmp_path) and reaches real Verifier servers
(real VerifierCore and math checker), a real Generator server (GeneratorService over a TorchEngine on a tiny model)
and Learner servers. The learner is a minimal real servicer: the real one needs a DeepSpeed engine and is tested in
test_learner_service.py; what is tested here is what Control does with a learner's replies.
"""

from __future__ import annotations

import asyncio
import json
import math

import grpc
import msgpack
import numpy as np
import pyarrow as pa
import pytest

from _tiny_lm import one_torch_thread, tiny_moe
from ring_async.broker.durable import DurableBroker
from ring_async.broker.service import BrokerService
from ring_async.config import load_config
from ring_async.control import ControlClient, ControlService, RolloutStream, serve_control
from ring_async.control.rates import CounterRate
from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT, rollout_id
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.engines.generation import TorchEngine, TorchEngineCore
from ring_async.errors import ConfigError
from ring_async.engines.generation.service import GeneratorService, serve_generator
from ring_async.transport import (
    DEFAULT_MAX_MESSAGE_BYTES,
    bearer_metadata,
    channel_options,
    check_health,
    open_channel,
    pack_batch,
    start_server,
)
from ring_async.v1 import (
    common_pb2,
    control_pb2,
    control_pb2_grpc,
    generator_pb2_grpc,
    learner_pb2,
    learner_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
)
from ring_async.verifiers import verdicts as V
from ring_async.verifiers.core import VerifierCore
from ring_async.verifiers.feed import StreamFeed, StreamOverflowError
from ring_async.verifiers.math_checker import MathChecker
from ring_async.verifiers.service import VerifierService, start_verifier_server

TOKEN = "control-test-token"
CONFIG = load_config(overrides={"broker.group_size": 2, "algorithm.max_staleness": 3,
                                "algorithm.filter_zero_adv": False, "algorithm.budget_tokens": 100_000,
                                "broker.max_pool_tokens": 1_000_000})
TESTS = {"mode": "function", "entry": "f", "cases": [{"args": [[1, 2]], "expected": 3}]}


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def math_checker():
    with MathChecker(workers=1) as checker:
        yield checker


def row(group: str, index: int, reward_type: str, response: str | None = None, *, tokens: int = 3,
        **metadata) -> dict:
    """One rollout row as a generator sends it to a verifier."""
    if response is not None:
        metadata["response_text"] = response
    return {
        "rollout_id": rollout_id(group, index), "group_id": group, "prompt_id": "p", "sample_index": index,
        "prompt_token_ids": [1, 2], "response_token_ids": np.arange(tokens, dtype=np.int32) % 100,
        "behaviour_logprobs": np.full(tokens, -0.5, dtype=np.float32), "policy_version_first": 0,
        "policy_version_last": 0, "finish_reason": "stop", "reward_type": reward_type, "verdict": "pending",
        "generation_s": 0.1, "verification_s": 0.0, "completed_at": 1.0,
        "metadata": msgpack.packb(metadata, use_bin_type=True),
    }


def rollouts(*rows: dict) -> pa.RecordBatch:
    return codec.build_batch(ROLLOUT, {name: [r[name] for r in rows] for name in rows[0]})


class Verifier:
    """A VerifierCore behind a real (internal, tokenless) Verifier server; decided external rows land in
    ``decided``."""

    def __init__(self, name: str, math_checker: MathChecker | None = None):
        self.core = VerifierCore(math_checker=math_checker, code_concurrency=1)
        self.decided: asyncio.Queue[pa.RecordBatch] = asyncio.Queue()
        self.service = VerifierService(self.core, verifier_id=name, on_external=self.decided.put)

    async def start(self) -> "Verifier":
        self.server = await start_verifier_server(self.service)
        self.channel = open_channel(self.server.address)
        self.stub = verifier_pb2_grpc.VerifierStub(self.channel)
        return self

    async def verify(self, *rows: dict) -> verifier_pb2.VerifyReply:
        return await self.stub.Verify(verifier_pb2.VerifyRequest(rollouts=pack_batch(rollouts(*rows), ROLLOUT)))

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(0)
        await self.core.close()
        await self.service.close()


class Learner(learner_pb2_grpc.LearnerServicer):
    """A minimal real Learner servicer that records the checkpoints asked of it; ``delay_s`` makes GetStatus slow."""

    def __init__(self, learner_id: str, delay_s: float = 0.0):
        self.learner_id = learner_id
        self.delay_s = delay_s
        self.tags: list[str] = []

    async def GetStatus(self, request, context) -> learner_pb2.LearnerStatus:
        await asyncio.sleep(self.delay_s)
        return learner_pb2.LearnerStatus(learner_id=self.learner_id, step=7, policy_version=7, last_consumed_step=6,
                                         last_checkpoint_step=5, tokens_per_s=123.0)

    async def Checkpoint(self, request, context) -> common_pb2.CheckpointReply:
        if request.tag == "busy":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a checkpoint is already being written")
        self.tags.append(request.tag)
        return common_pb2.CheckpointReply(path=f"/run/checkpoints/{request.tag or 'step-7'}", step=7,
                                          policy_version=7, last_consumed_step=6)


class System:
    """The broker with Control in process (Control served with the token), the given peers behind real servers, and
    a ControlClient with the right token."""

    def __init__(self, tmp_path, *, verifiers: int = 1, math_checker: MathChecker | None = None,
                 generator: bool = False, learners: tuple[Learner, ...] = (), **control):
        self.broker = DurableBroker(CONFIG, None, run_dir=tmp_path / "run")
        self.broker_service = BrokerService(self.broker)
        self.verifiers = [Verifier(f"verifier-{i}", math_checker) for i in range(verifiers)]
        self.learners = learners
        self.engine = TorchEngine(TorchEngineCore(tiny_moe(seed=0), max_batch_size=2)) if generator else None
        self.control_kwargs = control

    async def __aenter__(self) -> "System":
        self.servers = []
        channels: dict[str, dict[str, grpc.aio.Channel]] = {"verifiers": {}, "generators": {}, "learners": {}}
        for verifier in self.verifiers:
            await verifier.start()
            channels["verifiers"][verifier.service.verifier_id] = verifier.channel
        if self.engine is not None:
            await self.engine.start()
            self.generator = GeneratorService(self.engine, generator_id="generator-0")
            self.servers.append(server := await serve_generator(self.generator))
            channels["generators"]["generator-0"] = open_channel(server.address)
        for learner in self.learners:
            self.servers.append(server := await start_server([learner]))
            channels["learners"][learner.learner_id] = open_channel(server.address)
        self.channels = channels
        self.control = ControlService(self.broker_service, run_id="run-7", **channels, **self.control_kwargs)
        self.server = await serve_control(self.control, auth_token=TOKEN)
        self.client = ControlClient(self.server.address, TOKEN)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()
        await self.control.close()
        await self.server.stop(0)
        for channel in (*self.channels["generators"].values(), *self.channels["learners"].values()):
            await channel.close()
        for server in self.servers:
            await server.stop(0)
        for verifier in self.verifiers:
            await verifier.stop()
        if self.engine is not None:
            await self.engine.close()
        await self.broker_service.close()
        self.broker.close()


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def until(condition, timeout_s: float = 10.0) -> None:
    async def wait():
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout_s)


async def next_batch(stream, timeout_s: float = 10.0) -> pa.RecordBatch:
    return await asyncio.wait_for(stream.__anext__(), timeout_s)


# ------------------------------------------------------------------------------------------ authentication


def test_calls_without_the_right_token_are_refused(tmp_path):
    async def main():
        async with System(tmp_path) as system:
            address = system.server.address
            tokenless = open_channel(address)
            wrong = ControlClient(address, "not-the-token")
            stub = control_pb2_grpc.ControlStub(tokenless)
            prompt = control_pb2.Prompt(text="1+1?", reward_type="math", answer="2")
            errors = {
                "no token, SubmitPrompts": await refused(
                    stub.SubmitPrompts(control_pb2.SubmitPromptsRequest(prompts=[prompt]))),
                "no token, GetStatus": await refused(stub.GetStatus(common_pb2.StatusRequest())),
                "no token, StreamRollouts": await refused(
                    stub.StreamRollouts(verifier_pb2.StreamRolloutsRequest()).read()),
                "wrong token, SubmitPrompts": await refused(wrong.submit_prompts([prompt])),
                "wrong token, SubmitRewards": await refused(wrong.submit_rewards({"g/0": 1.0})),
                "wrong token, Pause": await refused(wrong.pause("nope")),
                "wrong token, StreamRollouts": await refused(wrong.stream_rollouts().__anext__()),
            }
            health = await check_health(tokenless, "ring_async.v1.Control")  # probes need no secret
            queued = system.broker.core.queued_prompts
            ids = await system.client.submit_prompts([prompt])  # the right token gets in
            await tokenless.close()
            await wrong.close()
            return errors, health, queued, ids, system.control.pause_state.paused

    errors, health, queued, ids, paused = asyncio.run(main())
    for what, error in errors.items():
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, what
    assert "missing bearer token" in errors["no token, GetStatus"].details()
    assert health == "SERVING"
    assert queued == 0 and not paused  # nothing a refused call asked for happened
    assert ids == ["injected-0"]


def test_control_refuses_to_serve_without_a_token(tmp_path):
    async def main():
        control = ControlService(BrokerService(DurableBroker(CONFIG, None)), run_id="r")
        with pytest.raises(ConfigError, match="auth token must not be empty"):
            await serve_control(control, auth_token="")

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ SubmitPrompts


def test_prompts_are_queued_in_the_broker_by_priority_and_bad_requests_are_refused_whole(tmp_path):
    good = {"text": "1+1?", "reward_type": "math", "answer": "2"}
    bad_requests = {
        "prompts: at least one prompt": [],
        "prompts[1].text: must not be empty": [good, {"text": "  ", "reward_type": "math", "answer": "1"}],
        "prompts[1].reward_type: must be one of math, code, external": [good, {"text": "x", "reward_type": "poem"}],
        "prompts[1].answer: a math prompt needs its reference answer": [good, {"text": "x", "reward_type": "math"}],
        "prompts[1].tests: a code prompt needs its tests": [good, {"text": "x", "reward_type": "code"}],
        "prompts[1].tests: not valid JSON": [good, {"text": "x", "reward_type": "code", "tests": "{"}],
        "prompts[1].tests.mode: must be one of": [good, {"text": "x", "reward_type": "code", "tests": {"cases": []}}],
        "prompts[1] ('m').metadata: must be a msgpack map": [
            good, {"prompt_id": "m", "text": "x", "reward_type": "external", "metadata": msgpack.packb([1, 2])}],
        "prompts[1].metadata: not valid msgpack": [good, {"text": "x", "reward_type": "external",
                                                          "metadata": b"\xc1"}],
        "prompts[1].group_size: at most 1024, got 5000": [good, {"text": "x", "reward_type": "external",
                                                                 "group_size": 5000}],
        "prompts[1].prompt_id: 'a' is given more than once": [{**good, "prompt_id": "a"}, {**good, "prompt_id": "a"}],
    }

    async def main():
        async with System(tmp_path) as system:
            ids = await system.client.submit_prompts([
                {"prompt_id": "low", "text": "1+1?", "reward_type": "math", "answer": "2", "priority": -1},
                {"text": "write f", "reward_type": "code", "tests": TESTS, "priority": 5, "group_size": 3},
                {"text": "rate this", "reward_type": "external", "metadata": {"source": "ui"}},
            ])
            queued = system.broker.core.queued_prompts
            errors = {words: await refused(system.client.submit_prompts(prompts))
                      for words, prompts in bad_requests.items()}
            after = system.broker.core.queued_prompts
            leased = system.broker.lease("g0", 4).groups
            return ids, queued, errors, after, leased

    ids, queued, errors, after, leased = asyncio.run(main())
    assert ids == ["low", "injected-0", "injected-1"]  # in request order: the caller's id, else assigned
    assert queued == 3 and after == 3  # a refused request queued nothing, not even its good first prompt
    for words, error in errors.items():
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, words
        assert words in error.details(), (words, error.details())
    # Leased highest priority first; the broker's group size unless the prompt set one.
    assert leased.column("prompt_id").to_pylist() == ["injected-0", "injected-1", "low"]
    assert leased.column("group_size").to_pylist() == [3, 2, 2]
    assert json.loads(leased.column("tests")[0].as_py()) == TESTS
    assert leased.column("answer").to_pylist() == [None, None, "2"]
    assert msgpack.unpackb(leased.column("metadata")[1].as_py()) == {"source": "ui"}


# ------------------------------------------------------------------------------------------ SubmitRewards


def test_external_rewards_reach_the_verifier_that_holds_the_rollout(tmp_path):
    async def main():
        async with System(tmp_path, verifiers=2) as system:
            v0, v1 = system.verifiers
            await v0.verify(row("g", 0, "external"), row("g", 1, "external"), row("g", 2, "external"))
            await v1.verify(row("h", 0, "external"))
            client = system.client
            first = await client.submit_rewards({"g/0": 0.5, "h/0": 0.25, "nope/0": 1.0})
            decided = [await asyncio.wait_for(v.decided.get(), 5) for v in (v0, v1)]
            retry = await client.submit_rewards({"g/0": 0.5})
            masked = await client.submit_rewards({"g/1": None})
            masked_row = await asyncio.wait_for(v0.decided.get(), 5)

            stub = control_pb2_grpc.ControlStub(client.channel)
            twice = await refused(stub.SubmitRewards(verifier_pb2.SubmitRewardsRequest(rewards=[
                verifier_pb2.Reward(rollout_id="g/2", reward=1.0), verifier_pb2.Reward(rollout_id="g/2", reward=0.0)])))
            not_finite = await refused(client.submit_rewards({"g/2": math.nan}))
            still_waiting = v0.core.awaiting_external()

            await v1.server.stop(0)  # a verifier that went away fails the call; what the others took stays taken
            down = await refused(client.submit_rewards({"g/2": 1.0}))
            delivered = await asyncio.wait_for(v0.decided.get(), 5)
            return first, decided, retry, masked, masked_row, twice, not_finite, still_waiting, down, delivered

    first, decided, retry, masked, masked_row, twice, not_finite, still_waiting, down, delivered = asyncio.run(main())
    assert (first.accepted, first.already_rewarded, first.unknown) == (2, 0, 1)
    assert list(first.unknown_rollout_ids) == ["nope/0"]
    assert [d.column("rollout_id").to_pylist() for d in decided] == [["g/0"], ["h/0"]]
    assert [d.column("reward").to_pylist() for d in decided] == [[0.5], [0.25]]
    assert all(d.column("verdict").to_pylist() == [V.SCORED] for d in decided)
    assert (retry.accepted, retry.already_rewarded, retry.unknown) == (0, 1, 0)
    assert masked.accepted == 1
    assert masked_row.column("verdict").to_pylist() == [V.UNVERIFIABLE]  # masked from training, not scored 0
    assert masked_row.column("reward").to_pylist() == [None]
    for error, words in ((twice, "given more than once: g/2"), (not_finite, "must be a finite number")):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in error.details()
    assert still_waiting == ["g/2"]  # a refused request applied nothing
    assert down.code() == grpc.StatusCode.UNAVAILABLE
    assert "verifier-1" in down.details() and "retrying the whole request is safe" in down.details()
    assert delivered.column("rollout_id").to_pylist() == ["g/2"] and delivered.column("reward").to_pylist() == [1.0]


# ------------------------------------------------------------------------------------------ StreamRollouts


def test_streams_show_waiting_rows_from_before_the_subscription_and_scored_rows(tmp_path, math_checker):
    async def main():
        async with System(tmp_path, verifiers=2, math_checker=math_checker) as system:
            v0, v1 = system.verifiers
            client = system.client
            await v0.verify(row("early", 0, "external"))  # waiting before anyone subscribes
            pending = client.stream_rollouts(pending_external_only=True)
            everything = client.stream_rollouts()
            math_only = client.stream_rollouts(["math"])
            snapshot = await next_batch(pending)
            await until(lambda: all(v.service.stream_subscribers == 3 for v in (v0, v1)))

            await v1.verify(row("g", 0, "math", r"so \boxed{3}", answer="3"), row("g", 1, "external"))
            started = await next_batch(pending)
            scored_math = await next_batch(everything)
            math_seen = await next_batch(math_only)
            await client.submit_rewards({"early/0": 0.75})
            scored_external = await next_batch(everything)

            again = client.stream_rollouts(pending_external_only=True)  # a reconnecting reward model
            resnapshot = await next_batch(again)
            typo = await refused(client.stream_rollouts(["poetry"]).__anext__())
            streams = (pending, everything, math_only, again)
            for stream in streams:
                stream.cancel()
            await until(lambda: all(v.service.stream_subscribers == 0 for v in (v0, v1)))
            return snapshot, started, scored_math, math_seen, scored_external, resnapshot, typo, streams

    snapshot, started, scored_math, math_seen, scored_external, resnapshot, typo, streams = asyncio.run(main())
    assert snapshot.column("rollout_id").to_pylist() == ["early/0"]
    assert snapshot.column("verdict").to_pylist() == [V.PENDING_EXTERNAL] and snapshot.column("reward").null_count == 1
    assert started.column("rollout_id").to_pylist() == ["g/1"]
    assert started.column("verdict").to_pylist() == [V.PENDING_EXTERNAL]
    for batch in (scored_math, math_seen):
        assert batch.column("rollout_id").to_pylist() == ["g/0"]
        assert batch.column("verdict").to_pylist() == [V.CORRECT] and batch.column("reward").to_pylist() == [1.0]
    assert scored_external.column("rollout_id").to_pylist() == ["early/0"]
    assert scored_external.column("verdict").to_pylist() == [V.SCORED]
    assert scored_external.column("reward").to_pylist() == [0.75]
    assert resnapshot.column("rollout_id").to_pylist() == ["g/1"]  # early/0 has its reward now
    assert typo.code() == grpc.StatusCode.INVALID_ARGUMENT and "'poetry'" in typo.details()
    assert all(stream.skipped == 0 for stream in streams)


def test_a_broken_verifier_stream_ends_the_client_stream_with_unavailable(tmp_path):
    async def main():
        async with System(tmp_path, verifiers=2) as system:
            stream = system.client.stream_rollouts(pending_external_only=True)
            await until(lambda: all(v.service.stream_subscribers == 1 for v in system.verifiers))
            await system.verifiers[1].server.stop(0)
            error = await refused(next_batch(stream))
            await until(lambda: system.verifiers[0].service.stream_subscribers == 0)  # the other relay ended too
            return error

    error = asyncio.run(main())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "verifier verifier-1" in error.details() and "reconnect" in error.details()


def slow_reader(system, request: verifier_pb2.StreamRolloutsRequest) -> tuple[RolloutStream, grpc.aio.Channel]:
    """A Control stream on a channel that keeps gRPC's receive window small (no BDP probing, which would let the
    transport buffer several MB of a reader that does not read, and by a varying amount): Control's writes to it block
    after a few hundred KB, so a small stream queue fills while it does not read."""
    options = [*channel_options(DEFAULT_MAX_MESSAGE_BYTES), ("grpc.http2.bdp_probe", 0)]
    channel = grpc.aio.insecure_channel(system.server.address, options=options)
    stub = control_pb2_grpc.ControlStub(channel)
    return RolloutStream(stub.StreamRollouts(request, metadata=[bearer_metadata(TOKEN)])), channel


def test_a_slow_reader_skips_scored_rows_and_never_blocks_the_verifier(tmp_path):
    rows, chunk = 40, 10
    big = 8_000  # tokens: rows of 64 KB, 2.5 MB in all

    async def main():
        async with System(tmp_path, stream_queue_batches=2) as system:
            (v0,) = system.verifiers
            slow, slow_channel = slow_reader(system, verifier_pb2.StreamRolloutsRequest())
            await until(lambda: v0.service.stream_subscribers == 1)
            for start in range(0, rows, chunk):
                await v0.verify(*(row("g", i, "external", tokens=big) for i in range(start, start + chunk)))
            reply = await system.client.submit_rewards({rollout_id("g", i): i / rows for i in range(rows)})
            # The stream has not been read, and the verifier did all its work: nothing waited for a reader.
            decided = [await asyncio.wait_for(v0.decided.get(), 10) for _ in range(rows)]
            seen_scored: list[str] = []
            while len(seen_scored) + slow.skipped < rows:
                seen_scored += (await next_batch(slow)).column("rollout_id").to_pylist()
            slow.cancel()
            await slow_channel.close()
            return reply, decided, seen_scored, slow.skipped

    reply, decided, seen_scored, skipped = asyncio.run(main())
    assert reply.accepted == rows and len(decided) == rows
    assert skipped > 0 and len(seen_scored) + skipped == rows
    assert seen_scored == sorted(seen_scored, key=lambda i: int(i.split("/")[1]))  # what arrives keeps its order


def test_a_waiting_stream_whose_reader_falls_behind_ends_and_a_reconnect_gets_every_waiting_row(tmp_path):
    rows, chunk = 40, 10
    big = 8_000

    async def main():
        async with System(tmp_path, stream_queue_batches=2) as system:
            (v0,) = system.verifiers
            stuck, stuck_channel = slow_reader(system, verifier_pb2.StreamRolloutsRequest(pending_external_only=True))
            await until(lambda: v0.service.stream_subscribers == 1)
            for start in range(0, rows, chunk):
                await v0.verify(*(row("g", i, "external", tokens=big) for i in range(start, start + chunk)))
            # Waiting rows are never skipped: past its bound the stream's queue is dropped whole and the stream ends.
            await until(lambda: any(feed.closed for feed in system.control._feeds))
            seen: list[str] = []
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    seen += (await next_batch(stuck)).column("rollout_id").to_pylist()
            await stuck_channel.close()
            again = system.client.stream_rollouts(pending_external_only=True)
            snapshot: list[str] = []
            while len(snapshot) < rows:
                snapshot += (await next_batch(again)).column("rollout_id").to_pylist()
            reply = await system.client.submit_rewards({rollout_id("g", i): 1.0 for i in range(rows)})
            again.cancel()
            return ended.value, seen, snapshot, again.skipped, reply

    error, seen, snapshot, skipped, reply = asyncio.run(main())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "fell behind" in error.details() and "reconnect" in error.details()
    assert len(seen) < rows
    assert sorted(snapshot) == sorted(rollout_id("g", i) for i in range(rows)) and skipped == 0
    assert reply.accepted == rows  # every row still waited for its reward


def test_the_stream_queue_drops_the_oldest_scored_batches_and_keeps_every_waiting_one():
    async def main():
        feed: StreamFeed[str] = StreamFeed(max_batches=2)
        feed.put("wait-1", 1, droppable=False)
        for i in range(5):
            feed.put(f"scored-{i}", 10)
        feed.put("wait-2", 1, droppable=False)
        feed.skip(4)  # dropped upstream
        got = [await feed.get() for _ in range(4)]
        feed.close()
        return got, await feed.get(), feed.skipped_total

    got, end, total = asyncio.run(main())
    assert got == [("wait-1", 34), ("scored-3", 0), ("scored-4", 0), ("wait-2", 0)]
    assert end is None and total == 34


def test_the_stream_queue_is_bounded_in_bytes_too():
    async def main():
        feed: StreamFeed[str] = StreamFeed(max_batches=100, max_bytes=1000)
        for i in range(4):
            feed.put(f"scored-{i}", 1, 400)  # at most two fit in 1000 bytes
        feed.put("huge", 1, 5000)  # larger than the bound on its own: queued alone
        feed.put("wait", 1, 5000, droppable=False)  # never counts against the bound
        return [await feed.get() for _ in range(len(feed))]

    assert asyncio.run(main()) == [("huge", 4), ("wait", 0)]


def test_the_stream_queue_ends_the_stream_rather_than_drop_a_waiting_batch():
    async def main():
        feed: StreamFeed[str] = StreamFeed(max_batches=3, max_bytes=1000)
        for i in range(3):
            feed.put(f"wait-{i}", 1, 100, droppable=False)
        feed.put("scored", 1, 100)
        first = await feed.get()
        feed.put("wait-3", 1, 100, droppable=False)  # 3 waiting batches queued again: still within the bound
        feed.put("wait-4", 1, 100, droppable=False)  # one more: the queue goes and the stream ends
        feed.put("late", 1, 100)  # ignored: the stream has ended
        with pytest.raises(StreamOverflowError) as overflow:
            await feed.get()
        bytes_bound: StreamFeed[str] = StreamFeed(max_batches=100, max_bytes=1000)
        bytes_bound.put("wait-0", 1, 600, droppable=False)
        bytes_bound.put("wait-1", 1, 600, droppable=False)
        return first, len(feed), str(overflow.value), bytes_bound.closed

    first, left, message, closed_by_bytes = asyncio.run(main())
    assert first == ("wait-0", 0) and left == 0
    assert "3 batches (300 bytes)" in message and "reconnect" in message
    assert closed_by_bytes


# ------------------------------------------------------------------------------------------ status, pause, checkpoint


def test_status_aggregates_the_broker_and_every_role_that_answers(tmp_path):
    learners = (Learner("learner-0"), Learner("learner-stuck", delay_s=5.0))

    async def main():
        async with System(tmp_path, generator=True, learners=learners, status_timeout_s=0.5) as system:
            await system.client.submit_prompts([{"text": f"q{i}", "reward_type": "math", "answer": "1"}
                                                for i in range(3)])
            groups = system.broker.lease("g0", 1).groups
            system.broker.submit(synthetic_rollouts(groups, np.random.default_rng(0), LengthSpread(4, 9, 6),
                                                    policy_version=0, prompt_tokens=3, vocab_size=50))
            system.broker.set_policy_version(2)
            return await system.client.status()

    status = asyncio.run(main())
    assert status.run_id == "run-7" and status.uptime_s > 0 and not status.pause.paused
    broker = status.broker
    assert broker.queued_prompts == 2 and broker.leased_groups == 0 and broker.policy_version == 2
    assert broker.rollouts_by_outcome["accepted"] == 2 and broker.pool_rollouts == 2
    assert broker.tokens_by_outcome["accepted"] == broker.pool_tokens > 0
    assert status.max_staleness == 3 and status.pool_staleness == 2  # version 2 learner, version 0 rollouts
    assert [g.generator_id for g in status.generators] == ["generator-0"]
    assert status.generators[0].engine == "torch" and status.generated_tokens_per_s == 0.0
    assert [v.verifier_id for v in status.verifiers] == ["verifier-0"]
    assert [(l.learner_id, l.step) for l in status.learners] == [("learner-0", 7)]  # the stuck one is left out
    assert list(status.unreachable) == ["learner-stuck"]
    assert status.unreachable["learner-stuck"].startswith("DEADLINE_EXCEEDED")
    assert status.steps_per_min == 0.0 and status.trained_tokens_per_s == 0.0


def test_counter_rates_cover_their_window():
    rate = CounterRate(horizon_s=300)
    assert rate.per_second(60) == 0.0
    for t in range(0, 601, 30):
        rate.add(float(t), 10.0 * t)  # 10 per second throughout
    assert rate.per_second(60) == pytest.approx(10.0) and rate.per_second(300) == pytest.approx(10.0)
    rate.add(630.0, 10.0 * 600)  # nothing in the last 30 s
    assert rate.per_second(60) == pytest.approx(5.0)


def test_pause_and_resume_reach_the_generators_and_checkpoint_returns_the_learners_reply(tmp_path):
    learner = Learner("learner-0")

    async def main():
        async with System(tmp_path, generator=True, learners=(learner,)) as system:
            client = system.client
            generator = generator_pb2_grpc.GeneratorStub(system.channels["generators"]["generator-0"])

            async def generator_pause() -> common_pb2.PauseState:
                return (await generator.GetStatus(common_pb2.StatusRequest())).pause

            paused = await client.pause("operator")
            at_generator = await generator_pause()
            repaused = await client.pause("maintenance")
            in_status = (await client.status()).pause
            resumed = await client.resume()
            after = await generator_pause()
            checkpoint = await client.checkpoint("nightly")
            busy = await refused(client.checkpoint("busy"))
            return paused, at_generator, repaused, in_status, resumed, after, checkpoint, busy

    paused, at_generator, repaused, in_status, resumed, after, checkpoint, busy = asyncio.run(main())
    assert paused.paused and paused.reason == "operator" and paused.paused_at_unix_s > 0
    assert at_generator.paused and at_generator.reason == "operator"
    assert repaused.reason == "maintenance" and repaused.paused_at_unix_s == paused.paused_at_unix_s
    assert in_status == repaused
    assert not resumed.paused and resumed.reason == "" and not after.paused
    assert (checkpoint.path, checkpoint.step, checkpoint.last_consumed_step) == ("/run/checkpoints/nightly", 7, 6)
    assert learner.tags == ["nightly"]
    assert busy.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "learner-0" in busy.details() and "already being written" in busy.details()


def test_checkpoint_without_a_learner_is_a_failed_precondition(tmp_path):
    async def main():
        async with System(tmp_path) as system:
            return await refused(system.client.checkpoint())

    error = asyncio.run(main())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "no learner" in error.details()
