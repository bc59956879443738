import json
import random

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from ring_async.config import ModelConfig, RingConfig, load_config
from ring_async.errors import RingAsyncError
from ring_async.policy.embedded import initial_policy_path
from ring_async.policy.errors import PolicyError
from ring_async.policy.model import build_policy, count_parameters, load_policy, save_policy
from ring_async.policy.tokenizer import (
    IM_END, PAD, THINK, THINK_END, build_tokenizer, encode_prompt, format_prompt, stop_token_ids,
)
from ring_async.tasks.code_tasks import CODE_LEVELS, code_task
from ring_async.tasks.math_tasks import MATH_LEVELS, math_task

SMALL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, num_experts=4, experts_per_token=2,
                    expert_size=32, mlp_size=64, max_length=128)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(RingConfig().model.vocab_size)


def _task_strings(n: int = 300):
    rng = random.Random(7)
    for _ in range(n):
        for task in [math_task(rng, level, 0.3) for level in MATH_LEVELS] + [code_task(rng, lv) for lv in CODE_LEVELS]:
            yield task.prompt
            yield task.response


def test_tokenizer_round_trips_every_task_string_exactly(tokenizer):
    strings = list(_task_strings())
    strings += [format_prompt(tokenizer, s) for s in strings[:50]]
    strings += ["  leading and trailing  ", "tabs\tand\r\nCRLF", "émoji 🙂 and 中文", "\\boxed{-12}", ""]
    for text in strings:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text.replace("<|im_start|>", "").replace(IM_END, "")


def test_tokenizer_spells_digits_one_by_one_and_keeps_tags_whole(tokenizer):
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("<think>\n123 + 45 = 168\n</think>"))
    assert pieces[0] == THINK and pieces[-1] == THINK_END
    digits = [p.lstrip("Ġ") for p in pieces if p.lstrip("Ġ").isdigit()]
    assert digits == list("12345168")
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == PAD
    assert set(stop_token_ids(tokenizer)) == {tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert format_prompt(tokenizer, "hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("architecture", ["moe", "dense"])
def test_save_load_round_trip_gives_identical_logits(tmp_path, tokenizer, architecture):
    config = SMALL.model_copy(update={"architecture": architecture})
    model = build_policy(config, tokenizer, seed=3)
    folder = save_policy(model, tokenizer, tmp_path / "policy")
    policy = load_policy(folder)
    ids = torch.tensor([encode_prompt(tokenizer, "What is 12 + 30?")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, policy.model(ids).logits)
    assert policy.is_moe == (architecture == "moe")
    # The folder is an ordinary checkpoint: the Auto classes load it without ring-async.
    assert AutoTokenizer.from_pretrained(folder).encode("x = 1") == tokenizer.encode("x = 1")
    saved = json.loads((folder / "config.json").read_text())
    assert saved["head_dim"] == 16 and saved["torch_dtype"] == "float32" and saved["rope_theta"] == 10000.0
    if architecture == "moe":
        assert saved["num_experts"] == saved["num_local_experts"] == 4
        assert AutoConfig.from_pretrained(folder).num_experts == 4
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast" and "chat_template" in tok_config
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["top_k"] == 0 and generation["temperature"] == 1.0
    assert set(generation["eos_token_id"]) == set(stop_token_ids(tokenizer))


def test_build_is_deterministic_per_seed(tokenizer):
    a, b, c = (build_policy(SMALL, tokenizer, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_default_policy_is_a_few_million_parameters(tokenizer):
    counts = count_parameters(build_policy(RingConfig().model, tokenizer))
    assert 1_000_000 <= counts["total"] <= 10_000_000
    assert counts["active"] < counts["total"]


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(PolicyError, match=r"nowhere: not a Hugging Face model folder"):
        load_policy(tmp_path / "nowhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(RingAsyncError, match=r"broken/config\.json: invalid JSON"):
        load_policy(tmp_path / "broken")
    config = load_config(overrides={"model.path": str(tmp_path / "nowhere")})
    with pytest.raises(PolicyError, match=r"model\.path .*nowhere"):
        initial_policy_path(config)


def test_a_users_checkpoint_loads_through_the_same_path(tmp_path, tokenizer):
    folder = save_policy(build_policy(SMALL, tokenizer, seed=0), tokenizer, tmp_path / "theirs")
    config = load_config(overrides={"model.path": str(folder)})
    assert initial_policy_path(config) == folder
    assert load_policy(initial_policy_path(config)).tokenizer.chat_template


def test_embedded_policy_is_cached_by_config(tmp_path):
    overrides = {"cache.dir": str(tmp_path), **{f"model.{k}": v for k, v in SMALL.model_dump().items()}}
    first = initial_policy_path(load_config(overrides=overrides))
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert initial_policy_path(load_config(overrides=overrides)) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    other = initial_policy_path(load_config(overrides={**overrides, "run.seed": 5}))
    assert other != first and other.parent == first.parent
