"""The Verifier core: routing by reward type, masked verdicts, the external-reward wait, validation of whole
batches before any work, back-pressure, and the counters a service exports."""

import asyncio
import math
import threading

import pytest

from ring_async.verifiers import verdicts as V
from ring_async.verifiers.core import RolloutToScore, VerifierCore
from ring_async.verifiers.errors import TestsFormatError, VerifierError
from ring_async.verifiers.math_checker import MathChecker
from ring_async.verifiers.sandbox import CodeJudge

FUNCTION_TESTS = {"mode": "function", "entry": "f", "cases": [{"args": [[1, 2]], "expected": 3},
                                                              {"args": [[]], "expected": 0}]}
GOOD_CODE = "<think>sum it</think>\nHere it is:\n```python\ndef f(xs):\n    return sum(xs)\n```\n"
BAD_CODE = "```python\ndef f(xs):\n    return len(xs)\n```"


@pytest.fixture(scope="module")
def engines():
    with MathChecker(workers=2) as math_checker, CodeJudge(pool_size=2) as code_judge:
        yield math_checker, code_judge


def make_core(engines, **kwargs):
    math_checker, code_judge = engines
    return VerifierCore(math_checker=math_checker, code_judge=code_judge, code_concurrency=2, **kwargs)


def test_a_mixed_batch_is_routed_and_returned_in_order(engines):
    core = make_core(engines, external_timeout_s=0.3)

    async def main():
        batch = [
            RolloutToScore("m1", "math", r"so \boxed{3}", answer="3"),
            RolloutToScore("m2", "math", r"\boxed{4}", answer="3"),
            RolloutToScore("m3", "math", r"\boxed{4}", answer=r"\frac{"),
            RolloutToScore("c1", "code", GOOD_CODE, tests=FUNCTION_TESTS),
            RolloutToScore("c2", "code", BAD_CODE, tests=FUNCTION_TESTS),
            RolloutToScore("c3", "code", "no code here", tests=FUNCTION_TESTS),
            RolloutToScore("e1", "external", "judge me"),
            RolloutToScore("e2", "external", "nobody will judge me"),
        ]
        task = asyncio.create_task(core.score(batch))
        while "e1" not in core.awaiting_external():
            await asyncio.sleep(0.01)
        assert core.submit_reward("e1", 0.25, {"model": "rm-1"}) is True
        return await task

    results = asyncio.run(main())
    assert [r.rollout_id for r in results] == ["m1", "m2", "m3", "c1", "c2", "c3", "e1", "e2"]
    got = {r.rollout_id: (r.verdict, r.reward, r.masked) for r in results}
    assert got == {
        "m1": (V.CORRECT, 1.0, False), "m2": (V.INCORRECT, 0.0, False), "m3": (V.UNVERIFIABLE, None, True),
        "c1": (V.ACCEPTED, 1.0, False), "c2": (V.WRONG_ANSWER, 0.0, False), "c3": (V.COMPILE_ERROR, 0.0, False),
        "e1": (V.SCORED, 0.25, False), "e2": (V.UNVERIFIABLE, None, True),
    }
    assert results[5].details["reason"] == "no_code_block"
    assert results[6].details == {"model": "rm-1"}
    assert results[7].details["reason"] == "external_timeout"
    stats = core.stats()
    assert stats["by_type"]["math"]["verdicts"] == {V.CORRECT: 1, V.INCORRECT: 1, V.UNVERIFIABLE: 1}
    assert stats["by_type"]["math"]["masked"] == 1 and stats["by_type"]["external"]["masked"] == 1
    assert stats["by_type"]["code"]["latency_p50_s"] > 0
    assert stats["in_flight"] == 0 and stats["waiting_external"] == 0


def test_a_response_the_generator_stopped_is_masked_without_being_scored():
    class Untouchable:  # any call into the checkers fails the test
        def __getattr__(self, name):
            raise AssertionError(f"an aborted response reached the checker ({name})")

    core = VerifierCore(math_checker=Untouchable(), code_judge=Untouchable(), external_timeout_s=60)
    pending = []
    batch = [
        RolloutToScore("m1", "math", r"half an answer \boxed{3", answer="3", finish_reason="abort"),
        RolloutToScore("c1", "code", GOOD_CODE, tests=FUNCTION_TESTS, finish_reason="abort"),
        RolloutToScore("e1", "external", "half a", finish_reason="abort"),
    ]
    results = asyncio.run(asyncio.wait_for(core.score(batch, on_external=pending.append), 10))
    assert [(r.rollout_id, r.verdict, r.reward, r.masked) for r in results] == [
        ("m1", V.UNVERIFIABLE, None, True), ("c1", V.UNVERIFIABLE, None, True), ("e1", V.UNVERIFIABLE, None, True)]
    assert "stopped" in results[0].details["reason"]
    # Nothing waits for a reward model, and the verdicts are counted like any other.
    assert core.awaiting_external() == [] and pending == []
    assert core.stats()["by_type"]["code"]["verdicts"] == {V.UNVERIFIABLE: 1}


def test_a_reward_that_arrives_first_is_kept_for_its_rollout(engines):
    core = make_core(engines, external_timeout_s=5)
    assert core.submit_reward("early", 1.0) is False

    async def main():
        return await core.score([RolloutToScore("early", "external", "r")])

    (result,) = asyncio.run(main())
    assert (result.verdict, result.reward) == (V.SCORED, 1.0)
    assert core.stats()["early_external_rewards"] == 0


def test_rewards_can_come_from_another_thread(engines):
    core = make_core(engines, external_timeout_s=5)

    async def main():
        task = asyncio.create_task(core.score([RolloutToScore(f"x{i}", "external", "r") for i in range(5)]))
        while len(core.awaiting_external()) < 5:
            await asyncio.sleep(0.01)
        sender = threading.Thread(target=lambda: [core.submit_reward(f"x{i}", i / 10) for i in range(5)])
        sender.start()
        results = await task
        sender.join()
        return results

    assert [r.reward for r in asyncio.run(main())] == [0.0, 0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize("rollout,error,words", [
    (RolloutToScore("a", "vibes", "r"), VerifierError, ["rollouts[1]", "reward_type", "'vibes'"]),
    (RolloutToScore("a", "math", "r"), VerifierError, ["rollouts[1]", "answer"]),
    (RolloutToScore("a", "code", "r"), VerifierError, ["rollouts[1]", "tests"]),
    (RolloutToScore("a", "code", "r", tests={"mode": "stdio", "cases": [{"input": "1"}]}), TestsFormatError,
     ["rollouts[1]", "cases[0]", "'output'"]),
    (RolloutToScore("a", "code", "r", tests=FUNCTION_TESTS, metadata={"lang": "cpp"}), VerifierError,
     ["rollouts[1]", "stdio"]),
    (RolloutToScore("", "math", "r", answer="1"), VerifierError, ["rollouts[1].rollout_id"]),
])
def test_a_bad_record_rejects_the_whole_batch_before_any_work(engines, rollout, error, words):
    core = make_core(engines)

    async def main():
        await core.score([RolloutToScore("ok", "math", r"\boxed{1}", answer="1"), rollout])

    with pytest.raises(error) as raised:
        asyncio.run(main())
    for word in words:
        assert word in str(raised.value)
    assert core.stats()["by_type"]["math"]["verdicts"] == {}  # nothing was scored


def test_external_ids_must_be_unique_among_waiting_rollouts(engines):
    core = make_core(engines, external_timeout_s=0.2)

    async def main():
        await core.score([RolloutToScore("dup", "external", "r"), RolloutToScore("dup", "external", "r")])

    with pytest.raises(VerifierError, match="dup"):
        asyncio.run(main())


def test_non_finite_rewards_are_refused(engines):
    core = make_core(engines)
    for bad in (math.nan, math.inf, "1", True):
        with pytest.raises(VerifierError):
            core.submit_reward("r", bad)


def test_back_pressure_bounds_the_work_in_flight(engines):
    core = make_core(engines, max_pending=2, external_timeout_s=5)
    peak = 0

    async def reward_model():
        nonlocal peak
        delivered = set()
        while len(delivered) < 6:
            waiting = core.awaiting_external()
            peak = max(peak, len(waiting), core.in_flight)
            for rollout_id in set(waiting) - delivered:
                core.submit_reward(rollout_id, 1.0)
                delivered.add(rollout_id)
            await asyncio.sleep(0.01)

    async def main():
        scoring = asyncio.create_task(core.score([RolloutToScore(f"b{i}", "external", "r") for i in range(6)]))
        await reward_model()
        return await scoring

    results = asyncio.run(main())
    assert [r.verdict for r in results] == [V.SCORED] * 6
    assert 1 <= peak <= 2
