"""``ring-async run`` and ``ring-async eval`` end to end: every role a Ray actor on an embedded local Ray instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_hosts import short_config
from test_learner import SMALL, policy_dir  # noqa: F401  (fixture)


def cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ring_async.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def small_run_config(tmp_path, code_train: int = 0) -> Path:
    """A short run's config file: the small test policy, few easy synthetic tasks, a one-epoch SFT."""
    config = short_config(tmp_path).model_dump(mode="json")
    config["model"] = SMALL.model_dump(mode="json")
    config["tasks"].update({"math_train": 60, "math_heldout": 8, "code_train": code_train, "code_heldout": 0,
                            "math_difficulty": 1})
    config["sft"].update({"epochs": 1, "batch_size": 16, "warmup_steps": 1})
    config["checkpoint_selection"].update({"probe_prompts": 8, "max_new_tokens": 16})
    config["cache"]["dir"] = str(tmp_path / "cache")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.e2e
def test_run_trains_on_local_ray_and_eval_reads_the_result(tmp_path, policy_dir):  # noqa: F811
    path = small_run_config(tmp_path)

    out = cli("run", "--config", str(path), "--start-from", str(policy_dir), "--steps", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["step_tokens_min"] == summary["step_tokens_max"] == 96
    rollouts = summary["accounting"]["rollouts"]
    assert rollouts["trained"] > 0 and rollouts["accepted"] >= rollouts["trained"]
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    assert (run_dir / "checkpoints" / "latest").is_file()

    ev = cli("eval", "--config", str(path), str(run_dir / "checkpoints"), "--limit", "4", timeout=200)
    assert ev.returncode == 0, ev.stderr[-3000:]
    report = json.loads(ev.stdout.strip().splitlines()[-1])
    assert report["prompts"] == 4 and 0.0 <= report["avg@1"] <= 1.0
    assert report["policy"].endswith("step-000002/policy")

    # The same command on the same run directory resumes it: the broker replays its journal, the learner starts from
    # the step-2 checkpoint, and only the third step is trained.
    more = cli("run", "--config", str(path), "--start-from", str(policy_dir), "--steps", "3")
    assert more.returncode == 0, more.stderr[-3000:]
    resumed = json.loads(more.stdout.strip().splitlines()[-1])
    assert resumed["steps"] == 3 and resumed["step_tokens_min"] == resumed["step_tokens_max"] == 96
    steps = [json.loads(line)["step"] for line in (run_dir / "learner-steps.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-000003"


def test_run_refuses_bad_arguments_with_one_line(tmp_path):
    for args, words in ((["run", "--steps", "0"], "--steps"), (["run", "--steps", "1", "--reward-types", "poetry"],
                                                               "--reward-types"),
                        (["run", "--steps", "1", "--start-from", str(tmp_path)], "not a Hugging Face model folder")):
        out = cli(*args, timeout=120)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], out.stderr


@pytest.mark.e2e
def test_demo_runs_sft_then_rl_on_ray_and_writes_the_summary(tmp_path):
    path = small_run_config(tmp_path, code_train=16)
    out = cli("demo", "--config", str(path), "--steps", "2", "--code-steps", "1", "--run-dir", str(tmp_path / "demo"),
              timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for key in ("sft_accuracy", "rl_accuracy", "steps", "step_tokens_min", "step_tokens_max", "budget",
                "wall_seconds"):
        assert key in summary, key
    # Two math steps, then one code step rewarded by the sandbox, every one of exactly Φ tokens.
    assert summary["steps"] == 3 and summary["code_steps"] == 1
    assert summary["step_tokens_min"] == summary["step_tokens_max"] == summary["budget"]
    code = json.loads((tmp_path / "demo" / "rl-code" / "learner-steps.jsonl").read_text().splitlines()[0])
    assert code["loss_tokens"] == summary["budget"]
    assert 0.0 <= summary["sft_accuracy"] <= 1.0 and 0.0 <= summary["rl_accuracy"] <= 1.0
    assert summary["final_policy"].endswith("policy") and (tmp_path / "demo" / "steps.png").stat().st_size > 10_000
    assert (tmp_path / "demo" / "rl-math" / "learner-steps.jsonl").is_file()


@pytest.mark.e2e
def test_serve_answers_status_and_stops_with_a_checkpoint(tmp_path, policy_dir):  # noqa: F811
    path = small_run_config(tmp_path)
    env = {**os.environ, "RING_ASYNC_CONTROL_TOKEN": "serve-test-token"}
    log = (tmp_path / "serve.log").open("w")  # a file: an unread stderr pipe would fill and block the service
    proc = subprocess.Popen([sys.executable, "-m", "ring_async.cli", "serve", "--config", str(path), "--start-from",
                             str(policy_dir), "--quiet"], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        # Printed once every role and Control are up (actors' own output is forwarded to stdout too).
        for line in proc.stdout:
            if line.startswith('{"control"'):
                break
        assert line.startswith('{"control"'), (tmp_path / "serve.log").read_text()[-3000:]
        started = json.loads(line)
        assert started["token"] == "from $RING_ASYNC_CONTROL_TOKEN"  # the token is never echoed
        steps = 0
        for _ in range(120):  # wait until it has trained
            out = subprocess.run([sys.executable, "-m", "ring_async.cli", "status", "--address", started["control"]],
                                 capture_output=True, text=True, env=env, timeout=60)
            assert out.returncode == 0, out.stderr
            status = json.loads(out.stdout)
            steps = int(status["learners"][0].get("step", 0)) if status.get("learners") else 0
            if steps >= 1:
                break
            time.sleep(1)
        assert steps >= 1 and int(status["broker"]["steps_emitted"]) >= 1  # int64 fields are JSON strings
        refused = subprocess.run([sys.executable, "-m", "ring_async.cli", "status", "--address", started["control"],
                                  "--token", "wrong"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    final = json.loads(stdout.strip().splitlines()[-1])
    assert final["stopped_after_steps"] >= 1 and final["last_checkpoint_step"] == final["stopped_after_steps"]
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
