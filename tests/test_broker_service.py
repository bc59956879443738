"""The Broker gRPC service over loopback, over a real DurableBroker journaling into tmp_path.

Rollouts are synthetic and already scored; the generators', verifiers' and learner's own work is tested elsewhere.
What is tested here is the contract of broker.proto as the real clients (GrpcBrokerClient, VerifyThenSubmit,
GrpcBatchSource) see it: status codes, exactly-once intake, the long-poll, re-delivery by step id, the background
lease expiry and a restart.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pyarrow as pa
import pytest

from ring_async.broker.durable import DurableBroker
from ring_async.broker.ledger import OUTCOMES, REJECTIONS
from ring_async.broker.prompts import Prompt
from ring_async.broker.service import BrokerService, serve_broker
from ring_async.config import RingConfig, load_config
from ring_async.data.schemas import PROMPT_GROUP, ROLLOUT, TRAIN_BATCH
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.data.train_batch import TrainBatch
from ring_async.engines.generation.clients import GrpcBrokerClient, VerifyThenSubmit
from ring_async.engines.training.service import GrpcBatchSource
from ring_async.transport import open_channel, pack_batch, start_server, unpack_batch
from ring_async.v1 import broker_pb2, broker_pb2_grpc, common_pb2, verifier_pb2, verifier_pb2_grpc

PHI = 300
# Every group pools (no zero-advantage filter); groups of 4 samples of 20..37 tokens: four fill one step, never two.
CONFIG = load_config(overrides={"algorithm.budget_tokens": PHI, "algorithm.filter_zero_adv": False,
                                "broker.group_size": 4, "broker.max_pool_tokens": 100_000,
                                "broker.expected_response_tokens": 28})
LENGTHS = LengthSpread(low=20, high=37, median=28)
PROMPTS = [Prompt(f"p{i}", f"prompt {i}", "math") for i in range(50)]
FILLS_A_STEP = 4  # groups


def scored(groups: pa.RecordBatch, seed: int = 0, version: int = 0) -> pa.RecordBatch:
    return synthetic_rollouts(groups, np.random.default_rng(seed), LENGTHS, policy_version=version, prompt_tokens=4,
                              vocab_size=100)


class Served:
    """A DurableBroker on ``run_dir`` behind a real Broker server on 127.0.0.1, and a stub to call it."""

    def __init__(self, run_dir, config: RingConfig = CONFIG, prompts: list[Prompt] | None = PROMPTS, **service_kwargs):
        self.broker = DurableBroker(config, prompts, run_dir=run_dir)
        self.service = BrokerService(self.broker, **service_kwargs)

    async def __aenter__(self) -> "Served":
        self.server = await serve_broker(self.service)
        self.channel = open_channel(self.server.address, default_timeout_s=30)
        self.stub = broker_pb2_grpc.BrokerStub(self.channel)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()
        await self.service.close()
        await self.server.stop(0)
        self.broker.close()

    async def lease_reply(self, groups: int) -> broker_pb2.LeaseReply:
        return await self.stub.LeasePrompts(broker_pb2.LeaseRequest(generator_id="g0", max_groups=groups))

    async def lease(self, groups: int) -> pa.RecordBatch:
        return unpack_batch((await self.lease_reply(groups)).groups, PROMPT_GROUP)

    async def submit(self, rollouts: pa.RecordBatch | common_pb2.ArrowBatch) -> broker_pb2.SubmitRolloutsReply:
        message = rollouts if isinstance(rollouts, common_pb2.ArrowBatch) else pack_batch(rollouts, ROLLOUT)
        return await self.stub.SubmitRollouts(broker_pb2.SubmitRolloutsRequest(rollouts=message, submitter_id="t"))

    async def next_batch(self, step_id: int, wait_s: float = 0.0, learner_version: int = 0,
                         **call) -> broker_pb2.TrainBatchReply:
        request = broker_pb2.NextTrainBatchRequest(learner_id="l0", step_id=step_id, learner_version=learner_version,
                                                   wait_s=wait_s)
        return await self.stub.NextTrainBatch(request, **call)

    async def acknowledge(self, through_step_id: int) -> broker_pb2.AcknowledgeStepsReply:
        return await self.stub.AcknowledgeSteps(broker_pb2.AcknowledgeStepsRequest(through_step_id=through_step_id))

    async def status(self) -> broker_pb2.BrokerStatus:
        return await self.stub.GetStatus(common_pb2.StatusRequest())


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def assert_accounting_closes(status: broker_pb2.BrokerStatus) -> None:
    rollouts, tokens = status.rollouts_by_outcome, status.tokens_by_outcome
    assert set(rollouts) == {"accepted", *OUTCOMES}
    assert set(tokens) == {"accepted", *OUTCOMES, "cut_tail"}
    assert set(status.rejected_rollouts) == set(status.rejected_tokens) == set(REJECTIONS)
    assert rollouts["accepted"] == sum(rollouts[o] for o in OUTCOMES) + status.pool_rollouts + status.pending_rollouts
    assert tokens["accepted"] == (sum(tokens[o] for o in OUTCOMES) + tokens["cut_tail"] + status.pool_tokens
                                  + status.pending_tokens)


def spy(broker: DurableBroker, name: str) -> list[int]:
    """Record the thread of every call to ``broker.<name>``."""
    threads: list[int] = []
    method = getattr(broker, name)

    def recorded(*args, **kwargs):
        threads.append(threading.get_ident())
        return method(*args, **kwargs)

    setattr(broker, name, recorded)
    return threads


# ------------------------------------------------------------------------------------------------------ the contract


def test_a_step_carries_exactly_phi_tokens_and_is_redelivered_byte_identical(tmp_path):
    async def main():
        async with Served(tmp_path) as s:
            rollouts = scored(await s.lease(FILLS_A_STEP))
            first, retry = await s.submit(rollouts), await s.submit(rollouts)  # a retry after a "lost" reply
            batch, again = await s.next_batch(0), await s.next_batch(0)
            return rollouts.num_rows, first, retry, batch, again, await s.status()

    rows, first, retry, batch, again, status = asyncio.run(main())
    assert (first.accepted, first.duplicates, first.late) == (rows, 0, 0)
    assert (retry.accepted, retry.duplicates, retry.late) == (0, rows, 0)
    assert batch.ready and batch.step_id == 0 and batch.batch.schema == TRAIN_BATCH.tag
    train = TrainBatch.from_ipc(batch.batch.ipc)
    assert train.loss_tokens == PHI and train.step_id == 0 and batch.batch.num_rows == train.num_sequences
    assert again.ready and again.batch.ipc == batch.batch.ipc
    assert status.steps_emitted == 1 and status.outbox_steps == 1 and status.acknowledged_step == -1
    assert status.rollouts_by_outcome["accepted"] == rows and status.rejected_rollouts["duplicate"] == rows
    assert status.tokens_by_outcome["trained"] == PHI and status.leased_groups == 0
    assert_accounting_closes(status)


def test_bad_requests_are_refused_with_their_codes_and_change_nothing(tmp_path):
    async def main():
        async with Served(tmp_path) as s:
            groups = await s.lease(1)
            good = scored(groups)
            wire = pack_batch(good, ROLLOUT)
            column = good.schema.get_field_index("prompt_id")
            wrong_prompt = good.set_column(column, good.schema.field(column),
                                           pa.array(["p-other"] + good["prompt_id"].to_pylist()[1:]))
            before, journal_before = await s.status(), s.broker.status()["journal_seq"]
            payloads = {
                "not arrow": common_pb2.ArrowBatch(ipc=b"\x00not arrow", schema=ROLLOUT.tag, num_rows=1),
                "truncated": common_pb2.ArrowBatch(ipc=wire.ipc[: len(wire.ipc) // 2], schema=ROLLOUT.tag,
                                                   num_rows=wire.num_rows),
                "other tag": pack_batch(groups, PROMPT_GROUP),
                "other schema": common_pb2.ArrowBatch(ipc=pack_batch(groups, PROMPT_GROUP).ipc, schema=ROLLOUT.tag,
                                                      num_rows=groups.num_rows),
                "row count": common_pb2.ArrowBatch(ipc=wire.ipc, schema=ROLLOUT.tag, num_rows=wire.num_rows + 1),
            }
            for name, payload in payloads.items():
                err = await refused(s.submit(payload))
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())
                assert {"other tag": "rollout/v1", "row count": "num_rows"}.get(name, "") in err.details()
            # A well-formed batch with one invalid row is refused whole, as a conflict with the broker's state.
            err = await refused(s.submit(wrong_prompt))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "p-other" in err.details()
            err = await refused(s.lease_reply(0))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_groups" in err.details()
            err = await refused(s.next_batch(0, wait_s=-1.0))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "wait_s" in err.details()
            # Nothing counted, nothing journaled, and the broker keeps serving.
            assert await s.status() == before and s.broker.status()["journal_seq"] == journal_before
            assert (await s.submit(good)).accepted == good.num_rows

    asyncio.run(main())


def test_next_train_batch_long_polls_and_a_submit_wakes_it(tmp_path):
    async def main():
        # Polling alone would look again only after 30 s: an answer within the test means the submit woke it.
        async with Served(tmp_path, poll_s=30.0) as s:
            rollouts = scored(await s.lease(FILLS_A_STEP))
            looks = spy(s.broker, "train_batch")
            started = time.monotonic()
            empty = await s.next_batch(0, wait_s=0.4)
            empty_s = time.monotonic() - started
            started = time.monotonic()
            capped = await s.next_batch(0, wait_s=60.0, timeout=1.0)  # the call's deadline bounds the wait
            capped_s = time.monotonic() - started
            looked = len(looks)
            waiting = asyncio.create_task(s.next_batch(0, wait_s=20.0))
            await asyncio.sleep(0.3)
            looks_while_waiting = len(looks) - looked
            assert not waiting.done()
            await s.submit(rollouts)
            submitted = time.monotonic()
            ready = await asyncio.wait_for(waiting, 10)
            return empty, empty_s, capped, capped_s, looks_while_waiting, ready, time.monotonic() - submitted, looks

    empty, empty_s, capped, capped_s, looks_while_waiting, ready, woke_s, looks = asyncio.run(main())
    assert not empty.ready and 0.35 <= empty_s < 2.0
    assert not capped.ready and capped_s < 1.0
    assert looks_while_waiting == 1  # one look, then asleep until the submit: no busy loop
    assert ready.ready and TrainBatch.from_ipc(ready.batch.ipc).loss_tokens == PHI and woke_s < 1.0
    assert set(looks) == {threading.get_ident()}  # the broker is only ever called on the event loop's thread


def test_steps_out_of_the_delivery_window_are_refused(tmp_path):
    async def main():
        async with Served(tmp_path) as s:
            await s.submit(scored(await s.lease(FILLS_A_STEP)))
            assert (await s.next_batch(0)).ready
            beyond = await refused(s.next_batch(2))
            never_emitted = await refused(s.acknowledge(5))
            acked, acked_again = await s.acknowledge(0), await s.acknowledge(0)
            trained = await refused(s.next_batch(0))
            return beyond, never_emitted, acked, acked_again, trained, await s.next_batch(1)

    beyond, never_emitted, acked, acked_again, trained, next_step = asyncio.run(main())
    assert beyond.code() == grpc.StatusCode.FAILED_PRECONDITION and "next step to assemble is 1" in beyond.details()
    assert never_emitted.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (acked.acknowledged_step, acked.outbox_steps) == (0, 0) and acked_again == acked
    assert trained.code() == grpc.StatusCode.FAILED_PRECONDITION and "already acknowledged" in trained.details()
    assert not next_step.ready  # step 1 is the next one and simply not ready


def test_a_new_policy_version_makes_old_rollouts_stale(tmp_path):
    stale_version = CONFIG.algorithm.max_staleness + 1

    async def main():
        async with Served(tmp_path) as s:
            await s.submit(scored(await s.lease(1)))  # pooled, short of Φ
            pooled = await s.status()
            reported = await s.stub.ReportPolicyVersion(broker_pb2.PolicyVersion(version=stale_version))
            older = await s.stub.ReportPolicyVersion(broker_pb2.PolicyVersion(version=0))  # ignored, not refused
            await s.next_batch(0, learner_version=stale_version + 1)  # the learner is ahead: applied
            return pooled, reported, older, await s.status()

    pooled, reported, older, final = asyncio.run(main())
    assert pooled.pool_rollouts == 4 and pooled.rollouts_by_outcome["stale"] == 0
    assert reported.policy_version == stale_version and reported.pool_rollouts == 0
    assert reported.rollouts_by_outcome["stale"] == 4 and reported.tokens_by_outcome["stale"] == pooled.pool_tokens
    assert older.policy_version == stale_version
    assert final.policy_version == stale_version + 1
    assert_accounting_closes(final)


def test_a_short_lease_advises_a_wait_and_prompts_run_out_only_when_no_lease_is_open(tmp_path):
    async def main():
        # No dataset: only injected prompts (Control.SubmitPrompts in a cluster) are leased.
        async with Served(tmp_path, prompts=None, retry_after_s=2.5) as s:
            s.broker.inject([Prompt("", "injected", "math")])
            short = await s.lease_reply(3)
            await s.submit(scored(unpack_batch(short.groups, PROMPT_GROUP)))
            return short, await s.lease_reply(1), await s.status()

    short, after, status = asyncio.run(main())
    assert short.groups.num_rows == 1 and short.retry_after_s == 2.5 and not short.backpressure
    # The leased group could still expire and requeue its prompt: not exhausted while it is open.
    assert not short.prompts_exhausted
    assert after.groups.num_rows == 0 and after.prompts_exhausted and status.prompts_exhausted


# ------------------------------------------------------------------------------------------------ the real clients


class AlreadyScored(verifier_pb2_grpc.VerifierServicer):
    """A verifier for rollouts that synthetic_rollouts scored already: hands them back unchanged."""

    async def Verify(self, request, context):
        return verifier_pb2.VerifyReply(rollouts=request.rollouts)


def test_the_generator_and_learner_clients_work_against_it(tmp_path):
    async def main():
        async with Served(tmp_path) as s:
            verifier = await start_server([AlreadyScored()])
            verifier_channel = open_channel(verifier.address)
            try:
                lease = await GrpcBrokerClient(s.channel, policy_version=lambda: 0).lease("g0", FILLS_A_STEP)
                forwarded = await VerifyThenSubmit(verifier_channel, s.channel, "g0")(scored(lease.groups))
                source = GrpcBatchSource(s.channel)
                step0 = await source.next_batch(0, 0, wait_s=5.0)
                await source.report_version(1)
                await source.acknowledge(0)
                step1 = await source.next_batch(1, 1, wait_s=0.2)
                return lease, forwarded, step0, step1, await s.status()
            finally:
                await verifier_channel.close()
                await verifier.stop(0)

    lease, forwarded, step0, step1, status = asyncio.run(main())
    assert lease.groups.num_rows == FILLS_A_STEP and not lease.backpressure and lease.retry_after_s == 0.0
    assert forwarded.accepted == FILLS_A_STEP * CONFIG.broker.group_size
    assert TrainBatch.from_ipc(step0).loss_tokens == PHI and step1 is None
    assert status.policy_version == 1 and status.acknowledged_step == 0 and status.outbox_steps == 0


# ------------------------------------------------------------------------------------------------ time and restarts


def test_leases_expire_in_the_background(tmp_path):
    config = load_config(overrides={"algorithm.budget_tokens": PHI, "broker.group_size": 4,
                                    "broker.lease_timeout_s": 0.3})

    async def main():
        async with Served(tmp_path, config, expire_every_s=0.05) as s:
            rollouts = scored(await s.lease(1))
            await asyncio.sleep(0.8)  # nobody calls the broker meanwhile
            expired = await s.status()
            late = await s.submit(rollouts)
            running = s.service._expiry
        return expired, late, running, s.service._expiry

    expired, late, running, after_close = asyncio.run(main())
    assert expired.leased_groups == 0 and expired.queued_prompts == 1  # the prompt waits to be leased again
    assert late.late == 4 and late.accepted == 0
    assert running is not None and running.done() and after_close is None


def test_a_restarted_broker_redelivers_the_unacknowledged_step_byte_identical(tmp_path):
    async def life(first: bool):
        async with Served(tmp_path) as s:
            if first:
                await s.submit(scored(await s.lease(FILLS_A_STEP)))
            return await s.next_batch(0), await s.status()

    (before, status_before), (after, status_after) = asyncio.run(life(True)), asyncio.run(life(False))
    assert before.ready and after.ready and after.batch.ipc == before.batch.ipc
    assert status_after == status_before
    assert_accounting_closes(status_after)
