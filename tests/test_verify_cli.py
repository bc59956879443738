"""``ring-async verify math|code``: one JSON object with a verdict and exit 0 whenever a verdict was reached; exit
2 with one line on stderr for bad arguments."""

import json
import subprocess
import sys

import pytest


def ring_async(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "ring_async.cli", "verify", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


def verdict_of(result):
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON object
    report = json.loads(lines[0])
    assert "verdict" in report and "reward" in report
    return report


def usage_error(result):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("gold,response,verdict,reward", [
    (r"\frac{1}{2}", r"so the answer is \boxed{0.5}", "correct", 1.0),
    ("12", r"<think>\boxed{12}</think> it is 13, \boxed{13}", "incorrect", 0.0),
    (r"\frac{", r"\boxed{1}", "unverifiable", None),
])
def test_math_verdicts(gold, response, verdict, reward):
    report = verdict_of(ring_async("math", "--gold", gold, "--response", response))
    assert (report["verdict"], report["reward"]) == (verdict, reward)


def test_math_reads_files_and_stdin(tmp_path):
    path = tmp_path / "response.txt"
    path.write_text("long reasoning...\n\\boxed{\\sqrt{2}}\n")
    assert verdict_of(ring_async("math", "--gold", r"\sqrt2", "--response", f"@{path}"))["verdict"] == "correct"
    report = verdict_of(ring_async("math", "--gold", "7", "--response", "-", stdin="\\boxed{7}"))
    assert report["verdict"] == "correct" and report["path"] == "fast"


def test_math_pathological_input_still_reaches_a_verdict():
    report = verdict_of(ring_async("math", "--gold", "5", "--response", r"\boxed{9^{9^{9}}}", "--no-prescreen",
                                   "--deadline", "1"))
    assert report["verdict"] == "unverifiable" and report["reason"] == "timeout"


def test_code_verdicts(tmp_path):
    tests = tmp_path / "tests.json"
    tests.write_text(json.dumps({"mode": "stdio", "cases": [{"input": "2 3\n", "output": "5\n"},
                                                            {"input": "10 -4\n", "output": "6\n"}]}))
    good = tmp_path / "good.py"
    good.write_text("a, b = map(int, input().split())\nprint(a + b)\n")
    bad = tmp_path / "bad.py"
    bad.write_text("a, b = map(int, input().split())\nprint(a * b)\n")
    cpp = tmp_path / "add.cpp"
    cpp.write_text("#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b; }\n")
    report = verdict_of(ring_async("code", "--program", str(good), "--tests", str(tests)))
    assert report["verdict"] == "accepted" and report["tests_passed"] == 2 and report["lang"] == "python"
    assert "namespaces" in report["protections"]
    assert verdict_of(ring_async("code", "--program", str(bad), "--tests", str(tests)))["verdict"] == "wrong_answer"
    report = verdict_of(ring_async("code", "--program", str(cpp), "--tests", str(tests), "--lang", "cpp"))
    assert report["verdict"] == "accepted" and report["lang"] == "cpp"


def test_bad_arguments_are_one_line_errors(tmp_path):
    program = tmp_path / "p.py"
    program.write_text("print(1)\n")
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({"mode": "function", "cases": [{"args": [1], "expected": 1}]}))
    line = usage_error(ring_async("code", "--program", str(program), "--tests", str(malformed)))
    assert "entry" in line and str(malformed) in line
    not_json = tmp_path / "not.json"
    not_json.write_text("{mode: stdio")
    assert "not valid JSON" in usage_error(ring_async("code", "--program", str(program), "--tests", str(not_json)))
    missing = usage_error(ring_async("code", "--program", str(tmp_path / "none.py"), "--tests", str(malformed)))
    assert "cannot read" in missing
    assert "--lang" in usage_error(ring_async("code", "--program", str(program), "--tests", str(malformed),
                                              "--lang", "rust"))
    assert "--gold" in usage_error(ring_async("math", "--response", "x"))
    assert usage_error(ring_async())  # no kind
    assert "cannot read" in usage_error(ring_async("math", "--gold", "1", "--response", f"@{tmp_path}/nope"))
