"""The math checker: a table of tricky cases with their verdicts, the front end's rules, the fast path's agreement
with Math-Verify, gold loading, and the hang guards (pathological inputs return unverifiable in time and never block
other checks)."""

import asyncio
import socket
import subprocess
import sys
import time
from concurrent.futures import wait

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring_async.verifiers import verdicts as V
from ring_async.verifiers.errors import VerifierError
from ring_async.verifiers.math_answer import extract_answer, fast_number, fast_verdict, find_boxes, final_section
from ring_async.verifiers.math_checker import MathChecker
from ring_async.verifiers.math_pool import MathPool
from ring_async.verifiers.math_prescreen import explosive, numeric_value

C, W, U = V.CORRECT, V.INCORRECT, V.UNVERIFIABLE  # correct, wrong (incorrect), unverifiable


@pytest.fixture(scope="module")
def checker():
    with MathChecker(workers=2) as mc:
        yield mc


# (gold, response, verdict, reason or None). The table the issue asks for, grouped by what it exercises.
TABLE = [
    # numbers with commas, percent, currency, units
    ("1000", r"\boxed{1,000}", C, None),
    ("1000", r"\boxed{1{,}000}", C, None),
    ("1,234,567", r"\boxed{1234567}", C, None),
    ("1000", r"\boxed{1,001}", W, None),
    ("50", r"\boxed{50\%}", C, None),
    (r"50\%", r"\boxed{50}", C, None),
    (r"25\%", r"\boxed{30\%}", W, None),
    ("5", r"\boxed{\$5}", C, None),
    ("5.50", r"\boxed{\$5.50}", C, None),
    ("5", r"\boxed{\$6}", W, None),
    ("5", r"\boxed{5 \text{ cm}}", C, None),
    ("12", r"\boxed{12\text{ inches}}", C, None),
    ("5", r"\boxed{6\text{ cm}}", W, None),
    # fractions vs decimals, rounding
    (r"\frac{1}{2}", r"\boxed{0.5}", C, None),
    ("0.75", r"\boxed{\dfrac{3}{4}}", C, None),
    (r"\frac{3}{4}", r"\boxed{3/4}", C, None),
    (r"\frac{1}{3}", r"\boxed{0.333333}", C, None),
    (r"\frac13", r"\boxed{0.33}", W, None),
    ("10", r"\boxed{10.0}", C, None),
    ("2.5", r"\boxed{2.50}", C, None),
    ("-3", r"\boxed{- 3}", C, None),
    ("3", r"\boxed{-3}", W, None),
    # equivalent expressions
    (r"\frac{\sqrt{2}}{2}", r"\boxed{\frac{1}{\sqrt{2}}}", C, None),
    (r"2\sqrt{5}", r"\boxed{\sqrt{20}}", C, None),
    ("2x+2", r"\boxed{2(x+1)}", C, None),
    ("x^2+2x+1", r"\boxed{(x+1)^2}", C, None),
    (r"\pi/4", r"\boxed{\frac{\pi}{4}}", C, None),
    ("3.14", r"\boxed{\pi}", W, None),
    ("x^2+1", r"\boxed{x^2-1}", W, None),
    # sets, intervals, tuple order
    (r"\{1,2,3\}", r"\boxed{\{3,2,1\}}", C, None),
    ("[1,2)", r"\boxed{[1,2)}", C, None),
    ("[1,2)", r"\boxed{(1,2]}", W, None),
    (r"(-\infty, 3]", r"\boxed{(-\infty,3]}", C, None),
    ("(1,2)", r"\boxed{(2,1)}", W, None),
    # equations vs values
    ("x=5", r"\boxed{5}", C, None),
    ("5", r"\boxed{x=5}", C, None),
    ("y=2x+1", r"\boxed{2x+1}", C, None),
    ("x=5", r"\boxed{x=6}", W, None),
    # extraction: the last box wins, boxes in <think> do not count
    ("3", r"<think>maybe \boxed{2}</think> The answer is \boxed{3}.", C, None),
    ("2", r"<think>maybe \boxed{2}</think> The answer is \boxed{3}.", W, None),
    (r"\frac{1}{2}", r"\boxed{0.5}, that is \boxed{\frac{1}{2}}", C, None),
    ("7", r"\fbox{7}", C, None),
    ("7", r"\boxed{\boxed{7}}", C, None),
    (r"\{1,2\}", r"\boxed{\{1,2\}}", C, None),
    ("3", r"first \boxed{3} then \boxed{ 3 }", C, None),
    # unclosed box, hedging, box inside <think> only, no box, too long
    ("3", r"\boxed{3", W, "unclosed_box"),
    ("3", r"\boxed{3} so finally \boxed{3", W, "unclosed_box"),
    ("3", r"\boxed{3} or \boxed{4}", W, "hedging"),
    ("3", r"<think>so \boxed{3}</think> The answer is 3.", W, "no_box"),
    ("3", r"<think>so \boxed{3} and I keep thinking", W, "no_final_answer"),
    ("3", "The answer is 3.", W, "no_box"),
    ("3", r"\boxed{}", W, "empty_box"),
    ("3", r"\boxed{" + "3+" * 300 + "3}", W, "answer_too_long"),
    ("3", r"\boxed{\text{I cannot solve this}}", W, None),
    # the gold decides whether we can verify at all
    (r"\frac{", r"\boxed{1}", U, None),
    ("", r"\boxed{1}", U, "gold_empty"),
    # explosive inputs are recognised before any worker sees them
    ("5", r"\boxed{9^{9^{9}}}", U, None),
    ("5", r"\boxed{100000!}", U, None),
]


@pytest.mark.parametrize("gold,response,verdict,reason", TABLE, ids=[f"{i}:{r[:30]}" for i, (_, r, _, _) in
                                                                     enumerate(TABLE)])
def test_table(checker, gold, response, verdict, reason):
    result = checker.check(gold, response)
    assert result.verdict == verdict, result.details
    assert result.reward == V.binary_reward(verdict)
    if reason is not None:
        assert result.details["reason"] == reason


def test_unverifiable_is_masked_not_zero(checker):
    result = checker.check(r"\frac{", r"\boxed{1}")
    assert result.verdict == U and result.reward is None
    assert checker.stats()[U] >= 1  # counted


# -- front end ---------------------------------------------------------------------------------------------------


def test_final_section_rules():
    assert final_section("a</think>b</think>c") == "c"
    assert final_section("no think at all") == "no think at all"
    assert final_section("<think>never closed") is None


def test_find_boxes_matches_braces_and_escapes():
    assert find_boxes(r"\boxed{\frac{1}{2}} and \fbox{x}") == ([r"\frac{1}{2}", "x"], False)
    assert find_boxes(r"\boxed{\{1\}}") == ([r"\{1\}"], False)
    assert find_boxes(r"\boxed{\}") == ([], True)  # the escaped brace does not close the box
    assert find_boxes(r"\boxedx{1} \boxed {2}") == (["2"], False)
    assert find_boxes(r"\boxed{1} \boxed{2") == (["1"], True)


def test_hedging_ignores_spacing_and_equal_numbers():
    assert extract_answer(r"\boxed{x + 1} \boxed{x+1}").answer == "x+1"
    assert extract_answer(r"\boxed{\frac12} \boxed{0.5}").answer == "0.5"
    assert extract_answer(r"\boxed{x+1} \boxed{1+x}").reason == "hedging"


def test_answer_length_cap_is_configurable():
    assert extract_answer(r"\boxed{12345}", max_answer_chars=4).reason == "answer_too_long"
    assert extract_answer(r"\boxed{1234}", max_answer_chars=4).answer == "1234"


def test_fast_number_forms():
    assert fast_number("1,234").value == 1234
    assert fast_number("-0.25").value == fast_number(r"-\frac{1}{4}").value == fast_number("-1/4").value
    assert fast_number(r"\frac34").value == fast_number(r"\dfrac{3}{4}").value
    assert fast_number(r"\$5").value == 5
    assert fast_number(".5").value == fast_number("0.50").value
    for not_plain in ("1,2", "12,34", "0,001", "x", "2^3", "1/0", r"\sqrt{2}", "1e6", "50\\%"):
        assert fast_number(not_plain) is None, not_plain


def test_fast_path_decides_plain_numbers_without_a_worker(checker):
    result = checker.check("1,000", r"\boxed{1000}")
    assert result.verdict == C and result.details["path"] == "fast"
    result = checker.check("17", r"\boxed{18}")
    assert result.verdict == W and result.details["path"] == "fast"
    # close but not equal: Math-Verify's rounding rules decide
    assert checker.check(r"\frac{1}{3}", r"\boxed{0.33333333}").details["path"] == "math_verify"


_plain = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.tuples(st.integers(-999, 999), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]:03d}"),
    st.tuples(st.integers(-50, 50), st.integers(1, 50)).map(lambda t: rf"\frac{{{t[0]}}}{{{t[1]}}}"),
    st.tuples(st.integers(1, 999), st.integers(0, 999), st.integers(0, 999)).map(lambda t: f"{t[0]},{t[1]:03d},"
                                                                                          f"{t[2]:03d}"),
)


@settings(max_examples=60)
@given(_plain, _plain)
def test_fast_path_agrees_with_math_verify(gold, answer):
    from math_verify import parse, verify

    gold_number, answer_number = fast_number(gold), fast_number(answer)
    assert gold_number is not None and answer_number is not None  # every generated form is a plain number
    decided = fast_verdict(gold_number, answer_number)
    if decided is None:  # too close to call exactly: left to Math-Verify's rounding by design
        return
    expected = verify(parse(f"${gold}$", parsing_timeout=None), parse(f"${answer}$", parsing_timeout=None),
                      timeout_seconds=None)
    assert decided == expected, (gold, answer)


@settings(max_examples=40)
@given(st.integers(-10**5, 10**5), st.integers(1, 30))
def test_equal_values_in_other_forms_agree_with_math_verify(n, k):
    from math_verify import parse, verify

    for form in (f"{n}.0", rf"\frac{{{n * k}}}{{{k}}}", f"{n * k}/{k}", f"{n:,}"):
        assert fast_verdict(fast_number(str(n)), fast_number(form)) is True
        assert verify(parse(f"${n}$", parsing_timeout=None), parse(f"${form}$", parsing_timeout=None),
                      timeout_seconds=None), form


@settings(max_examples=60)
@given(st.integers(-10**9, 10**9), st.integers(-10**9, 10**9))
def test_fast_path_on_integers_is_exact(a, b):
    assert fast_verdict(fast_number(str(a)), fast_number(f"{b:,}")) == (a == b)


# -- pre-screen ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [r"9^{9^{9}}", r"10^{-10^{10}}", r"2^{100000}", r"(x+1)^{100000}", "5000!",
                                  "2**100000", r"e^{10^{10}}", r"x^{2^{100000}}", r"2^{2^{2^{2^{2}}}}"])
def test_prescreen_flags_explosive(text):
    assert explosive(text) is not None


@pytest.mark.parametrize("text", [r"2^{10}", r"e^{i\pi}", "x^{n+1}", "10!", r"2^{2^{3}}", r"\frac{1}{2}^{3}",
                                  r"10^{100}", "x^2+2x+1", r"\sqrt{2}^{-4}"])
def test_prescreen_lets_ordinary_answers_through(text):
    assert explosive(text) is None


def test_numeric_value_only_for_numbers():
    assert numeric_value("2^{3}+1") == 9.0
    assert numeric_value("-10^{10}") == -1e10
    assert numeric_value("x+1") is None


# -- golds -----------------------------------------------------------------------------------------------------------


def test_golds_are_parsed_once_at_load_and_failures_reported(checker):
    golds = [r"\frac{\sqrt{3}}{2}", "42", r"\frac{", r"\sqrt{7}", r"\frac{\sqrt{3}}{2}", "9^{9^{9}}"]
    report = checker.load_golds(golds)
    assert report.total == 6 and report.parsed == 4
    assert [(index, gold) for index, gold, _ in report.unparseable] == [(2, r"\frac{"), (5, "9^{9^{9}}")]
    assert "gold_unparseable" in report.unparseable[0][2] and "explosive" in report.unparseable[1][2]
    assert checker._golds[r"\sqrt{7}"].blob is not None  # the parse travels with each check
    replies = checker.pool.stats().get("replies", 0)
    assert checker.load_golds([r"\sqrt{7}"]).parsed == 1
    assert checker.pool.stats().get("replies", 0) == replies  # not parsed again
    assert checker.check(r"\sqrt{7}", r"\boxed{7^{1/2}}").verdict == C


def test_async_check_from_an_event_loop(checker):
    async def main():
        return await asyncio.gather(checker.acheck("4", r"\boxed{4}"), checker.acheck(r"\sqrt{2}", r"\boxed{2}"))

    first, second = asyncio.run(main())
    assert (first.verdict, second.verdict) == (C, W)


# -- hang guards -----------------------------------------------------------------------------------------------------


def test_pathological_input_is_unverifiable_within_2s_and_does_not_block_others():
    # Pre-screen off, so the input really reaches a worker (sympy evaluates 9^387420489).
    with MathChecker(workers=2, prescreen=False) as mc:
        mc.check("1", r"\boxed{1}")  # workers up
        start = time.monotonic()
        slow = mc.check_async("5", r"\boxed{9^{9^{9}}}")
        others = [mc.check_async(r"\sqrt{%d}" % k, r"\boxed{\sqrt{%d}}" % k) for k in range(2, 12)]
        wait(others, timeout=10)
        assert all(f.done() and f.result().verdict == C for f in others)
        assert all(f.result().details["path"] == "math_verify" for f in others)  # through the workers
        assert not slow.done()  # the others finished while the pathological one was still running
        result = slow.result(timeout=10)
        assert result.verdict == U and result.reward is None
        assert time.monotonic() - start < 2.0


def test_hard_deadline_kills_and_replaces_a_stuck_worker():
    # No soft deadline: only the kill can end this check.
    with MathPool(workers=2, deadline_s=1.0, soft_deadline_s=None) as pool:
        pool.call(("ping",))
        start = time.monotonic()
        stuck = pool.submit(("check", "5", None, r"9^{9^{9}}"))
        others = [pool.submit(("check", "2", None, "2")) for _ in range(10)]
        assert all(f.result(timeout=10)[0] == C for f in others)
        assert stuck.result(timeout=10)[:2] == (U, "timeout")
        assert time.monotonic() - start < 2.0
        stats = pool.stats()
        assert stats["timeout"] == 1 and stats["spawned"] == 3  # two workers, one replacement
        assert pool.call(("check", "3", None, "3"))[0] == C  # the replacement serves


def test_workers_run_under_a_memory_rlimit():
    with MathPool(workers=1, memory_limit_mb=256) as pool:
        _, _pid, limit = pool.call(("ping",))
        assert 256 << 20 < limit < (256 << 20) + (2 << 30)  # what was mapped at start + the limit


def test_worker_answers_unverifiable_and_exits_after_a_memory_error(tmp_path):
    # The real serve loop in a real process, with a checker that runs out of memory on its first request.
    script = tmp_path / "oom_worker.py"
    script.write_text(
        "import socket, sys\n"
        "from multiprocessing.connection import Connection\n"
        "from ring_async.verifiers import math_worker\n"
        "def out_of_memory(self, request):\n"
        "    raise MemoryError()\n"
        "math_worker.Checker.handle = out_of_memory\n"
        "math_worker.serve(Connection(int(sys.argv[1])), 1 << 30, 1.0)\n"
    )
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, str(script), str(theirs.fileno())], pass_fds=(theirs.fileno(),))
    theirs.close()
    from multiprocessing.connection import Connection

    conn = Connection(ours.detach())
    conn.send(("check", "1", None, "1"))
    assert conn.recv() == (U, "memory_limit", None)
    assert proc.wait(timeout=30) == 0  # it exits rather than serving with a damaged interpreter
    conn.close()


def test_pool_rejects_inconsistent_deadlines():
    with pytest.raises(VerifierError):
        MathPool(workers=1, deadline_s=1.0, soft_deadline_s=2.0)
