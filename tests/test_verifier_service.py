"""The Verifier gRPC service over a real server on 127.0.0.1, the real math checker and the real code sandbox: a mixed
batch scored in order with masked rows left null, external rows reported pending and decided later, refusals of bad
payloads (INVALID_ARGUMENT) and of too much work (RESOURCE_EXHAUSTED) that leave the server serving, and GetStatus."""

import asyncio
import json

import grpc
import msgpack
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ring_async.data import codec
from ring_async.data.schemas import PROMPT_GROUP, ROLLOUT, rollout_id
from ring_async.transport import check_health, open_channel, pack_batch, unpack_batch
from ring_async.v1 import common_pb2, verifier_pb2, verifier_pb2_grpc
from ring_async.verifiers import verdicts as V
from ring_async.verifiers.core import VerifierCore
from ring_async.verifiers.math_checker import MathChecker
from ring_async.verifiers.sandbox import CodeJudge
from ring_async.verifiers.service import VerifierService, start_verifier_server

TESTS = json.dumps({"mode": "function", "entry": "f", "cases": [{"args": [[1, 2]], "expected": 3}]})
GOOD_CODE = "<think>sum it</think>\n```python\ndef f(xs):\n    return sum(xs)\n```\n"
SLOW_CODE = "```python\nimport time\ndef f(xs):\n    time.sleep(0.8)\n    return sum(xs)\n```\n"


@pytest.fixture(scope="module")
def engines():
    with MathChecker(workers=1) as math_checker, CodeJudge(pool_size=1) as code_judge:
        code_judge.warm_up()
        yield math_checker, code_judge


def row(index: int, reward_type: str, response: str | None, **metadata) -> dict:
    """One rollout row as a generator sends it: what the verifier needs rides in the msgpack metadata."""
    if response is not None:
        metadata["response_text"] = response
    return {
        "rollout_id": rollout_id("g", index), "group_id": "g", "prompt_id": "p", "sample_index": index,
        "prompt_token_ids": [1, 2], "response_token_ids": [3, 4, 5], "behaviour_logprobs": [-0.1, -0.2, -0.3],
        "policy_version_first": 0, "policy_version_last": 1, "finish_reason": "stop", "reward_type": reward_type,
        "verdict": "pending", "generation_s": 0.5, "verification_s": 0.0, "completed_at": 1.0,
        "metadata": msgpack.packb(metadata, use_bin_type=True),
    }


def rollouts(*rows: dict) -> pa.RecordBatch:
    return codec.build_batch(ROLLOUT, {name: [r[name] for r in rows] for name in rows[0]})


class Served:
    """A VerifierCore behind a real Verifier server on 127.0.0.1; decided external rows land in ``self.external``."""

    def __init__(self, engines, *, max_pending: int | None = None, **core):
        math_checker, code_judge = engines
        self.core = VerifierCore(math_checker=math_checker, code_judge=code_judge, code_concurrency=1, **core)
        self.external: asyncio.Queue[pa.RecordBatch] = asyncio.Queue()
        self.service = VerifierService(self.core, verifier_id="verifier-t", max_pending=max_pending,
                                       on_external=self.external.put)

    async def __aenter__(self):
        self.server = await start_verifier_server(self.service)
        self.channel = open_channel(self.server.address)
        self.stub = verifier_pb2_grpc.VerifierStub(self.channel)
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self.server.stop(0)
        await self.core.close()
        await self.service.close()

    async def verify(self, batch: pa.RecordBatch, **call) -> tuple[pa.RecordBatch, dict[str, int]]:
        reply = await self.stub.Verify(verifier_pb2.VerifyRequest(rollouts=pack_batch(batch, ROLLOUT)), **call)
        return unpack_batch(reply.rollouts, ROLLOUT), dict(reply.verdicts)

    async def status(self) -> verifier_pb2.VerifierStatus:
        return await self.stub.GetStatus(common_pb2.StatusRequest())


def refusal(call) -> grpc.aio.AioRpcError:
    async def catch():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        return refused.value

    return catch()


def test_a_mixed_batch_comes_back_in_order_and_the_external_row_is_decided_later(engines):
    batch = rollouts(
        row(0, "math", r"so \boxed{3}", answer="3"),
        row(1, "math", r"\boxed{4}", answer="3"),
        row(2, "math", r"\boxed{4}", answer=r"\frac{"),  # a gold that does not parse: unverifiable
        row(3, "code", GOOD_CODE, tests=TESTS),
        row(4, "external", None),  # no response_text needed: the reward model reads the response elsewhere
    )

    async def main():
        async with Served(engines) as served:
            scored, counts = await served.verify(batch)
            before = await served.status()
            assert served.core.awaiting_external() == ["g/4"]
            assert served.core.submit_reward("g/4", 0.25, {"model": "rm-1"}) is True
            decided = await asyncio.wait_for(served.external.get(), 5)
            return scored, counts, before, decided, await served.status()

    scored, counts, before, decided, after = asyncio.run(main())
    assert scored.column("rollout_id").to_pylist() == [f"g/{i}" for i in range(5)]
    assert scored.column("verdict").to_pylist() == [V.CORRECT, V.INCORRECT, V.UNVERIFIABLE, V.ACCEPTED,
                                                    "pending_external"]  # verdicts.PENDING_EXTERNAL, what the generator filters on
    assert scored.column("reward").to_pylist() == [1.0, 0.0, None, 1.0, None]  # masked and pending stay null
    seconds = scored.column("verification_s").to_pylist()
    assert all(s > 0 for s in seconds[:4]) and seconds[4] == 0.0
    for name in ("response_token_ids", "behaviour_logprobs", "policy_version_last", "metadata"):
        assert scored.column(name).equals(batch.column(name))  # everything else as it came
    assert counts == {V.CORRECT: 1, V.INCORRECT: 1, V.UNVERIFIABLE: 1, V.ACCEPTED: 1, V.PENDING_EXTERNAL: 1}
    # What VerifyThenSubmit hands the broker now: every row but the pending one.
    assert scored.filter(pc.not_equal(scored.column("verdict"), V.PENDING_EXTERNAL)).num_rows == 4

    assert decided.num_rows == 1 and decided.column("rollout_id").to_pylist() == ["g/4"]
    assert decided.column("verdict").to_pylist() == [V.SCORED] and decided.column("reward").to_pylist() == [0.25]
    assert decided.column("response_token_ids").equals(batch.column("response_token_ids").slice(4, 1))
    codec.check_batch(decided, ROLLOUT)

    assert before.verifier_id == "verifier-t" and list(before.reward_types) == ["math", "code", "external"]
    assert dict(before.verdicts) == {V.CORRECT: 1, V.INCORRECT: 1, V.UNVERIFIABLE: 1, V.ACCEPTED: 1}
    assert before.awaiting_external == 1 and before.queue_depth == 0 and before.inflight == 0
    assert dict(after.verdicts) == {**before.verdicts, V.SCORED: 1} and after.awaiting_external == 0
    assert sum(after.verdicts.values()) == batch.num_rows
    assert 0 < after.latency_p50_s <= after.latency_p95_s and after.latency_mean_s > 0


def test_bad_payloads_are_invalid_arguments_and_the_server_keeps_serving(engines):
    good = rollouts(row(0, "math", r"\boxed{2}", answer="2"))
    group = codec.build_batch(PROMPT_GROUP, {
        "group_id": ["g"], "prompt_id": ["p"], "prompt": ["1+1?"], "prompt_token_ids": [[1]],
        "reward_type": ["math"], "group_size": [2], "priority": [0], "lease_expires_at": [0.0]})
    requests = {
        "not a valid Arrow IPC stream": common_pb2.ArrowBatch(ipc=b"\xff" * 64, schema=ROLLOUT.tag, num_rows=1),
        "expected a rollout/v1 batch, got 'prompt_group/v1'": pack_batch(group, PROMPT_GROUP),
        "expected a rollout/v1 payload, got prompt_group/v1": common_pb2.ArrowBatch(
            ipc=codec.encode(group, PROMPT_GROUP), schema=ROLLOUT.tag, num_rows=1),
        "rollouts[1] ('g/1').answer": pack_batch(rollouts(row(0, "math", "1", answer="1"), row(1, "math", "1")),
                                                 ROLLOUT),
        "rollouts[0] ('g/0').metadata.response_text: missing": pack_batch(rollouts(row(0, "math", None, answer="1")),
                                                                           ROLLOUT),
        "rollouts[0] ('g/0').tests": pack_batch(rollouts(row(0, "code", GOOD_CODE, tests="{")), ROLLOUT),
    }

    async def main():
        async with Served(engines) as served:
            refused = {words: await refusal(served.stub.Verify(verifier_pb2.VerifyRequest(rollouts=message)))
                       for words, message in requests.items()}
            scored, _ = await served.verify(good)
            health = [await check_health(served.channel, name) for name in ("", "ring_async.v1.Verifier")]
            return refused, scored, health, await served.status()

    refused, scored, health, status = asyncio.run(main())
    for words, error in refused.items():
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (words, error.code())
        assert words in error.details()
    assert scored.column("verdict").to_pylist() == [V.CORRECT]
    assert health == ["SERVING", "SERVING"]
    assert dict(status.verdicts) == {V.CORRECT: 1}  # nothing of a refused batch was scored


def test_too_much_pending_work_is_refused_with_resource_exhausted(engines):
    math_row = rollouts(row(0, "math", r"\boxed{1}", answer="1"))

    async def main():
        async with Served(engines, max_pending=1, max_awaiting_external=1) as served:
            slow = asyncio.create_task(served.verify(rollouts(row(9, "code", SLOW_CODE, tests=TESTS))))
            while served.service.pending == 0:
                await asyncio.sleep(0.01)
            busy = await refusal(served.verify(math_row))
            during = await served.status()
            too_big = await refusal(served.verify(rollouts(row(0, "math", "1", answer="1"),
                                                           row(1, "math", "1", answer="1"))))
            slow_scored, _ = await slow
            retried, _ = await served.verify(math_row)  # the same request once the slow one is done

            externals = await refusal(served.verify(rollouts(row(5, "external", "a"), row(6, "external", "b"))))
            pending, _ = await served.verify(rollouts(row(5, "external", "a")))
            again, _ = await served.verify(rollouts(row(5, "external", "a")))  # a retry: still pending, not refused
            other = await refusal(served.verify(rollouts(row(6, "external", "b"))))
            return busy, during, too_big, slow_scored, retried, externals, pending, again, other

    busy, during, too_big, slow_scored, retried, externals, pending, again, other = asyncio.run(main())
    assert busy.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "busy: 1 rollout(s) pending and this batch adds 1, at most 1 at a time; retry later" in busy.details()
    assert during.inflight + during.queue_depth == 1
    assert too_big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "split the batch" in too_big.details()
    assert slow_scored.column("verdict").to_pylist() == [V.ACCEPTED]
    assert retried.column("verdict").to_pylist() == [V.CORRECT]
    for refused in (externals, other):
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_awaiting_external" in refused.details()
    assert "split the batch" in externals.details() and "retry once rewards have come" in other.details()
    assert pending.column("verdict").to_pylist() == again.column("verdict").to_pylist() == [V.PENDING_EXTERNAL]


def test_external_rows_time_out_as_unverifiable_and_a_cancelled_call_withdraws_its_own(engines):
    async def main():
        async with Served(engines, external_timeout_s=0.3) as served:
            await served.verify(rollouts(row(0, "external", "a")))
            timed_out = await asyncio.wait_for(served.external.get(), 5)
            served.core.external_timeout_s = 30  # from here on only a withdrawal ends a wait
            # The client gives up while the code row runs: the external row of that call must not stay registered,
            # or the client's retry would wait on a registration nobody told it about.
            batch = rollouts(row(1, "external", "b"), row(2, "code", SLOW_CODE, tests=TESTS))
            cancelled = await refusal(served.verify(batch, timeout=0.3))
            for _ in range(200):  # the server learns of the cancellation a moment after the client
                if not served.core.awaiting_external():
                    break
                await asyncio.sleep(0.01)
            return timed_out, cancelled, served.core.awaiting_external(), served.external.empty()

    timed_out, cancelled, waiting, nothing_else = asyncio.run(main())
    assert timed_out.column("verdict").to_pylist() == [V.UNVERIFIABLE]
    assert timed_out.column("reward").to_pylist() == [None]
    assert cancelled.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert waiting == [] and nothing_else


def test_submit_rewards_answers_only_rollouts_waiting_here_and_counts_retries(engines):
    def rewards(**values) -> verifier_pb2.SubmitRewardsRequest:
        return verifier_pb2.SubmitRewardsRequest(rewards=[
            verifier_pb2.Reward(rollout_id=k.replace("_", "/"), reward=v or 0.0, unverifiable=v is None)
            for k, v in values.items()])

    async def main():
        async with Served(engines, external_timeout_s=0.3) as served:
            # Not waiting here: unknown, and not kept for later (another verifier may own it).
            early = await served.stub.SubmitRewards(rewards(g_0=1.0))
            await served.verify(rollouts(row(0, "external", None), row(1, "external", None)))
            # g/0 was not decided by that reward: both wait until they time out.
            timed_out = pa.concat_batches([await asyncio.wait_for(served.external.get(), 5) for _ in range(2)])
            late = await served.stub.SubmitRewards(rewards(g_0=1.0))  # its wait is over: unknown

            served.core.external_timeout_s = 30
            await served.verify(rollouts(row(2, "external", None), row(3, "external", None)))
            assert served.core.submit_reward("g/2", 0.5)  # in process, as before
            await asyncio.wait_for(served.external.get(), 5)
            mixed = await served.stub.SubmitRewards(rewards(g_2=0.1, g_3=None, g_9=1.0))
            masked = await asyncio.wait_for(served.external.get(), 5)
            twice = await refusal(served.stub.SubmitRewards(verifier_pb2.SubmitRewardsRequest(rewards=[
                verifier_pb2.Reward(rollout_id="g/3"), verifier_pb2.Reward(rollout_id="g/3")])))
            return early, timed_out, late, mixed, masked, twice, await served.status()

    early, timed_out, late, mixed, masked, twice, status = asyncio.run(main())
    assert (early.accepted, early.already_rewarded, early.unknown, list(early.unknown_rollout_ids)) == (
        0, 0, 1, ["g/0"])
    assert sorted(timed_out.column("rollout_id").to_pylist()) == ["g/0", "g/1"]
    assert timed_out.column("verdict").to_pylist() == [V.UNVERIFIABLE] * 2
    assert late.unknown == 1
    assert (mixed.accepted, mixed.already_rewarded, mixed.unknown, list(mixed.unknown_rollout_ids)) == (
        1, 1, 1, ["g/9"])
    assert masked.column("rollout_id").to_pylist() == ["g/3"]
    assert masked.column("verdict").to_pylist() == [V.UNVERIFIABLE] and masked.column("reward").to_pylist() == [None]
    assert twice.code() == grpc.StatusCode.INVALID_ARGUMENT and "more than once: g/3" in twice.details()
    assert status.verdicts[V.SCORED] == 1 and status.verdicts[V.UNVERIFIABLE] == 3  # g/0, g/1 timed out; g/3


def test_stream_rollouts_snapshots_waiting_rows_filters_by_type_and_ends_with_the_service(engines):
    async def main():
        async with Served(engines) as served:
            await served.verify(rollouts(row(0, "external", None)))
            waiting = served.stub.StreamRollouts(verifier_pb2.StreamRolloutsRequest(pending_external_only=True))
            math_only = served.stub.StreamRollouts(verifier_pb2.StreamRolloutsRequest(reward_types=["math"]))
            snapshot = await waiting.read()
            while served.service.stream_subscribers < 2:
                await asyncio.sleep(0.01)
            await served.verify(rollouts(row(1, "math", r"\boxed{3}", answer="3"), row(2, "external", None)))
            started, scored = await waiting.read(), await math_only.read()
            typo = await refusal(served.stub.StreamRollouts(
                verifier_pb2.StreamRolloutsRequest(reward_types=["poetry"])).read())
            await served.service.close()  # ends the open streams
            ends = [await waiting.read(), await math_only.read()]
            return snapshot, started, scored, typo, ends

    snapshot, started, scored, typo, ends = asyncio.run(main())
    decode = lambda reply: unpack_batch(reply.rollouts, ROLLOUT)  # noqa: E731
    assert decode(snapshot).column("rollout_id").to_pylist() == ["g/0"]
    assert decode(started).column("rollout_id").to_pylist() == ["g/2"]
    assert decode(started).column("verdict").to_pylist() == [V.PENDING_EXTERNAL]
    assert decode(scored).column("rollout_id").to_pylist() == ["g/1"]
    assert decode(scored).column("verdict").to_pylist() == [V.CORRECT]
    assert snapshot.skipped == started.skipped == scored.skipped == 0
    assert typo.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown 'poetry'" in typo.details()
    assert ends == [grpc.aio.EOF, grpc.aio.EOF]
