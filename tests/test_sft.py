import json
from pathlib import Path
import random
import shutil
import subprocess
import sys

import pytest

from ring_async.config import ModelConfig, SftConfig, load_config
from ring_async.policy.model import build_policy, load_policy, save_policy
from ring_async.policy.tokenizer import build_tokenizer, encode_prompt
from ring_async.sft.pipeline import prepare_policy
from ring_async.sft.data import IGNORE_INDEX, collate, encode_examples
from ring_async.sft.trainer import SftError, list_checkpoints, run_sft
from ring_async.tasks.math_tasks import math_task
from ring_async.tasks.record import TaskRecord

SMALL = ModelConfig(hidden_size=48, num_layers=2, num_heads=2, num_kv_heads=1, num_experts=4, experts_per_token=2,
                    expert_size=48, max_length=128)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(1024)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, tokenizer):
    return save_policy(build_policy(SMALL, tokenizer, seed=0), tokenizer, tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="module")
def records():
    rng = random.Random(0)
    return [math_task(rng, 1) for _ in range(400)]


def test_loss_is_on_response_tokens_only(tokenizer, records):
    examples, too_long = encode_examples(tokenizer, records[:3] + [TaskRecord("no teacher", "math", answer="1")], 512)
    assert len(examples) == 3 and too_long == 0
    batch = collate(examples, tokenizer.pad_token_id)
    for row, (example, record) in enumerate(zip(examples, records)):
        prompt = encode_prompt(tokenizer, record.prompt)
        assert example.input_ids[: len(prompt)] == prompt
        labels = batch["labels"][row]
        assert (labels[: len(prompt)] == IGNORE_INDEX).all()
        response = labels[len(prompt) : len(example.input_ids)]
        assert tokenizer.decode(response[:-1]) == record.response and response[-1] == tokenizer.eos_token_id
        assert (labels[len(example.input_ids) :] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].sum() == len(example.input_ids)
    assert encode_examples(tokenizer, records[:3], 20) == ([], 3)


def test_a_few_sft_steps_reduce_the_loss_and_write_checkpoints(tmp_path, policy_dir, records, capsys):
    sft = SftConfig(epochs=2, batch_size=16, lr=3e-3, warmup_steps=5, save_every_steps=10, max_steps=36)
    result = run_sft(policy_dir, records, tmp_path / "run", sft, seed=0, progress=True)
    assert result.steps == 36 and len(result.losses) == 36
    first, last = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert last < 0.6 * first, (first, last)
    assert [c.step for c in result.checkpoints] == [10, 20, 30, 36]
    assert list_checkpoints(tmp_path / "run") == result.checkpoints
    assert result.checkpoints[-1].sft_tokens == result.response_tokens > 0
    assert abs(result.checkpoints[-1].epoch - 36 / 25) < 1e-3  # 400 examples / 16 = 25 steps an epoch
    # A checkpoint is an ordinary policy folder that reproduces the trained model.
    trained = load_policy(result.checkpoints[-1].path)
    assert trained.model.config.num_experts == 4
    summary = json.loads((tmp_path / "run" / "sft_summary.json").read_text())
    assert summary["checkpoints"][0]["path"] == "checkpoints/step-000010"
    err = capsys.readouterr().err
    assert "loss=" in err and "tok_s=" in err


def test_sft_without_teacher_responses_is_a_clear_error(tmp_path, policy_dir):
    with pytest.raises(SftError, match="none of the 2 tasks has a teacher 'response'"):
        run_sft(policy_dir, [TaskRecord(f"q{i}", "math", answer="1") for i in range(2)], tmp_path, SftConfig())


def test_cli_runs_the_cached_pipeline_end_to_end(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"cache:\n  dir: {tmp_path / 'cache'}\n"
        "model: {hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, num_experts: 2, expert_size: 32,"
        " max_length: 160}\n"
        "tasks: {math_train: 64, math_heldout: 8, math_difficulty: 1, code_train: 8, code_heldout: 2}\n"
        "sft: {epochs: 2, batch_size: 16, warmup_steps: 1}\n"
        "checkpoint_selection: {probe_prompts: 8, max_new_tokens: 24}\n"
    )

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "ring_async.cli", *args, "--config", str(config), "--quiet"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    chosen = cli("select-checkpoint")  # builds the policy, the tasks and the SFT run on the way
    assert chosen["step"] in (5, 10) and chosen["plot"].endswith("selection.png")
    assert Path(chosen["plot"]).is_file() and Path(chosen["report"]).is_file()  # in the cache, not a build folder
    again = cli("select-checkpoint")  # a cache hit names the same files
    assert (again["plot"], again["report"]) == (chosen["plot"], chosen["report"])
    sft = cli("sft")
    assert sft["steps"] == 10 and len(sft["checkpoints"]) == 2 and chosen["chosen"] in sft["checkpoints"]
    data = cli("make-data", "--out", str(tmp_path / "data"), "--format", "parquet")
    assert data["counts"] == {"train": {"math": 64, "code": 8}, "heldout": {"math": 8, "code": 2}}
    # In process, the same configuration is a cache hit; a moved cache still resolves its checkpoints.
    prepared = prepare_policy(load_config(config), progress=False)
    assert str(prepared.path) == chosen["chosen"] and load_policy(prepared.path).model.config.num_experts == 2
    shutil.copytree(tmp_path / "cache", tmp_path / "moved")
    moved = prepare_policy(load_config(config, {"cache.dir": str(tmp_path / "moved")}), progress=False)
    assert moved.path.is_relative_to(tmp_path / "moved") and (moved.path / "config.json").is_file()
    assert moved.selection.chosen.step == chosen["step"] and len(moved.splits.heldout) == 10
    bad = subprocess.run([sys.executable, "-m", "ring_async.cli", "sft", "--set", "sft.epochs=0", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("ring-async: error: ")
    assert "sft.epochs" in bad.stderr
