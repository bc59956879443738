import json
import subprocess
import sys


def ring_async(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ring_async.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_bad_config_exits_nonzero_with_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("algorithm:\n  cut: half\n  colour: blue\n")
    result = ring_async("config", "validate", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "algorithm.cut" in lines[0] and "'half'" in lines[0] and "algorithm.colour: unknown key" in lines[0]


def test_unknown_command_and_argument_are_one_line_usage_errors():
    for args in (["frobnicate"], ["demo", "--steps", "many"]):
        result = ring_async(*args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_config_show_round_trips(tmp_path):
    shown = ring_async("config", "show")
    assert shown.returncode == 0
    path = tmp_path / "c.yaml"
    path.write_text(shown.stdout)
    assert ring_async("config", "validate", str(path)).returncode == 0


def test_bench_broker_prints_json_with_exact_steps():
    result = ring_async("bench", "broker", "--json", "--steps", "5", "--budget", "65536")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("budget", "ingest_tokens_per_s", "assembly_ms_p50", "assembly_ms_p99", "step_tokens_min",
                "step_tokens_max", "steps"):
        assert key in report
    assert report["step_tokens_min"] == report["step_tokens_max"] == 65536
    assert report["accounting_closure"] == {"rollouts": 0, "tokens": 0}
    missing = ring_async("bench", "nope")
    assert missing.returncode == 1 and "available: broker" in missing.stderr


