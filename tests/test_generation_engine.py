"""The torch generation engine: vLLM sampling semantics, logprob parity, continuous batching, stops, streaming."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from _tiny_lm import byte_tokenizer, one_torch_thread, teacher_forced_logprobs, tiny_dense, tiny_moe
from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT
from ring_async.engines.generation import (
    GroupRequest,
    RequestError,
    SamplingParams,
    TorchEngine,
    TorchEngineCore,
)
from ring_async.engines.generation.rollouts import samples_to_rollouts
from ring_async.engines.generation.sampling import RowParams, apply_top_k_top_p, sample


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def moe():
    return tiny_moe()


@pytest.fixture(scope="module")
def dense():
    return tiny_dense()


def prompts(n: int, seed: int = 0, low: int = 3, high: int = 12) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 258, size=int(rng.integers(low, high))).tolist() for _ in range(n)]


def make_request(i: int, prompt: list[int], **sampling) -> GroupRequest:
    return GroupRequest(f"g{i}", f"p{i}", prompt, SamplingParams(**sampling))


# ------------------------------------------------------------------------------------------ temperature and greedy


@pytest.mark.parametrize("model_name", ["moe", "dense"])
def test_temperature_to_zero_equals_greedy(model_name, request):
    model = request.getfixturevalue(model_name)
    batch = prompts(5, seed=1)
    reference = []
    for prompt in batch:
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        reference.append(out[0, len(prompt):].tolist())
    # 0 and anything below vLLM's 1e-5 threshold is argmax; a small positive temperature concentrates all the mass
    # on the argmax (random logits have no ties), so it samples the same tokens.
    for temperature in (0.0, 1e-6, 1e-3):
        core = TorchEngineCore(model, max_batch_size=3, seed=7)
        for i, prompt in enumerate(batch):
            core.add(make_request(i, prompt, temperature=temperature, max_tokens=24, ignore_eos=True))
        got = {s.group_id: s.token_ids.tolist() for s in core.run_to_completion()}
        assert [got[f"g{i}"] for i in range(len(batch))] == reference, f"temperature {temperature}"


def test_greedy_rows_mixed_with_sampled_rows_stay_greedy(moe):
    batch = prompts(4, seed=2)
    solo = TorchEngineCore(moe, max_batch_size=4)
    solo.add(make_request(0, batch[0], temperature=0.0, max_tokens=16, ignore_eos=True))
    (alone,) = solo.run_to_completion()
    mixed = TorchEngineCore(moe, max_batch_size=4, seed=3)
    mixed.add(make_request(0, batch[0], temperature=0.0, max_tokens=16, ignore_eos=True))
    for i in range(1, 4):
        mixed.add(make_request(i, batch[i], temperature=1.3, top_p=0.9, top_k=20, max_tokens=16))
    together = {s.group_id: s for s in mixed.run_to_completion()}
    assert together["g0"].token_ids.tolist() == alone.token_ids.tolist()


# ------------------------------------------------------------------------------------------ top-p and top-k


def _kept(logits: torch.Tensor, top_p: float, top_k: int = 0) -> torch.Tensor:
    out = apply_top_k_top_p(
        logits.unsqueeze(0),
        torch.tensor([top_k]) if top_k else None,
        torch.tensor([top_p]) if top_p < 1 else None,
    )[0]
    return torch.isfinite(out)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()
    assert _kept(logits, 0.5).tolist() == [False, True, False, False]  # 0.5 alone reaches 0.5
    assert _kept(logits, 0.79).tolist() == [False, True, False, True]  # 0.5 + 0.3 = 0.8
    assert _kept(logits, 0.81).tolist() == [False, True, True, True]  # needs 0.15 too
    assert _kept(logits, 1e-6).tolist() == [False, True, False, False]  # never empty
    assert _kept(logits, 0.9, top_k=2).tolist() == [False, True, False, True]  # top-k first, then top-p


@given(
    logits=st.lists(st.floats(-8, 8), min_size=2, max_size=40).map(lambda xs: torch.tensor(xs, dtype=torch.float32)),
    top_p=st.floats(0.01, 0.999),
)
def test_top_p_mass_property(logits, top_p):
    probs = logits.softmax(-1)
    kept = _kept(logits, top_p)
    mass = float(probs[kept].sum())
    assert kept.any()
    # Kept tokens are the most likely ones (a kept token is at least as likely as any removed one) ...
    if (~kept).any():
        assert float(probs[kept].min()) >= float(probs[~kept].max()) - 1e-7
    # ... their mass reaches p, and without the least likely of them it would not (the set is minimal).
    assert mass >= top_p - 1e-5
    assert mass - float(probs[kept].min()) < top_p + 1e-5


def test_sampler_draws_from_the_renormalised_nucleus():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = probs.log().repeat(20000, 1)
    params = RowParams.build([SamplingParams(top_p=0.75)] * 20000, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    tokens, logprobs = sample(logits, params, generator, "processed")
    counts = torch.bincount(tokens, minlength=4).float() / 20000
    nucleus = torch.tensor([0.4, 0.3, 0.2, 0.0]) / 0.9
    assert counts[3] == 0
    assert torch.allclose(counts, nucleus, atol=0.015)
    # processed logprobs are those of the renormalised nucleus; raw ones those of the model
    assert torch.allclose(logprobs, nucleus[tokens].log(), atol=1e-5)
    _, raw = sample(logits[:10], RowParams.build([SamplingParams(top_p=0.75)] * 10, torch.device("cpu")), generator)
    assert torch.allclose(raw.exp(), torch.tensor([0.4, 0.3, 0.2, 0.1]).index_select(0, _.long()), atol=1e-5)


def test_temperature_scales_the_sampling_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().repeat(30000, 1)
    params = RowParams.build([SamplingParams(temperature=2.0)] * 30000, torch.device("cpu"))
    tokens, logprobs = sample(logits, params, torch.Generator().manual_seed(1), "processed")
    tempered = (probs.log() / 2.0).softmax(-1)
    counts = torch.bincount(tokens, minlength=3).float() / 30000
    assert torch.allclose(counts, tempered, atol=0.015)
    assert torch.allclose(logprobs, tempered[tokens].log(), atol=1e-5)


# ------------------------------------------------------------------------------------------ logprob parity


@pytest.mark.parametrize("model_name", ["moe", "dense"])
def test_logprobs_match_a_teacher_forced_forward_pass(model_name, request, capsys):
    """Continuous batching with holes, refills and relayouts must not change what the model computes."""
    model = request.getfixturevalue(model_name)
    core = TorchEngineCore(model, max_batch_size=3, seed=11)
    batch = prompts(6, seed=4, low=2, high=20)
    for i, prompt in enumerate(batch):
        core.add(make_request(i, prompt, n=2, max_tokens=10 + 7 * i))
    samples = core.run_to_completion()
    assert core.relayouts >= 2  # rows were added and compacted on the way
    worst = 0.0
    for s in samples:
        reference = teacher_forced_logprobs(model, list(s.prompt_token_ids), s.token_ids.tolist())
        worst = max(worst, float((reference - torch.from_numpy(s.logprobs)).abs().max()))
    with capsys.disabled():
        print(f"\n[logprob parity] {model_name}: max |engine - teacher forcing| = {worst:.3g} over "
              f"{sum(s.num_tokens for s in samples)} tokens")
    assert worst < 1e-4


def test_processed_logprobs_are_those_of_the_tempered_distribution(moe):
    core = TorchEngineCore(moe, max_batch_size=4, seed=5, logprobs_mode="processed")
    batch = prompts(3, seed=5)
    for i, prompt in enumerate(batch):
        core.add(make_request(i, prompt, temperature=0.7, max_tokens=12, ignore_eos=True))
    for s in core.run_to_completion():
        reference = teacher_forced_logprobs(moe, list(s.prompt_token_ids), s.token_ids.tolist(), temperature=0.7)
        assert float((reference - torch.from_numpy(s.logprobs)).abs().max()) < 1e-4


# ------------------------------------------------------------------------------------------ continuous batching


def test_a_finished_sequence_frees_its_slot_for_a_waiting_one(moe):
    core = TorchEngineCore(moe, max_batch_size=2)
    core.add(make_request(0, [5, 6, 7], max_tokens=3, ignore_eos=True))  # short
    core.add(make_request(1, [8, 9], max_tokens=30, ignore_eos=True))  # long
    core.add(make_request(2, [10, 11, 12, 13], max_tokens=3, ignore_eos=True))  # waits for a slot
    finished_at: dict[str, int] = {}
    step = 0
    while core.has_work:
        step += 1
        for s in core.step():
            finished_at[s.group_id] = step
        assert core.running <= 2
    # A step samples one token per running sequence, plus the first token of those it admits (from their prefill).
    # g2 took g0's slot in the step after g0 finished, and finished long before g1.
    assert finished_at["g0"] == 2
    assert finished_at["g2"] == 4
    assert finished_at["g1"] == 29


def test_continuous_batching_takes_fewer_steps_than_static_on_mixed_lengths(moe):
    lengths = [4, 40, 6, 5, 38, 7, 4, 5]

    def steps(scheduling: str) -> int:
        core = TorchEngineCore(moe, max_batch_size=4, scheduling=scheduling)
        for i, n in enumerate(lengths):
            core.add(make_request(i, [3 + i, 4, 5], max_tokens=n, ignore_eos=True))
        count = 0
        while core.has_work:
            core.step()
            count += 1
        return count

    assert steps("continuous") < steps("static")


def test_samples_finish_independently_and_group_counts_add_up(moe):
    core = TorchEngineCore(moe, max_batch_size=8, seed=2)
    core.add(make_request(0, [20, 21, 22], n=5, max_tokens=8))
    samples = core.run_to_completion()
    assert sorted(s.sample_index for s in samples) == [0, 1, 2, 3, 4]
    assert {s.rollout_id for s in samples} == {f"g0/{i}" for i in range(5)}
    assert all(s.logprobs.shape == s.token_ids.shape and s.logprobs.dtype == np.float32 for s in samples)
    assert all(s.policy_version_first == s.policy_version_last == 0 for s in samples)


def load_version(core: TorchEngineCore, version: int, seed: int) -> None:
    """Load another model's weights into ``core`` as ``version``, the way a weight update does."""
    from ring_async.engines.generation import iter_buckets

    assembler = core.assembler()
    for bucket in iter_buckets(tiny_moe(seed=seed), version=version):
        assembler.add(bucket)
    core.apply_weights(assembler.finish())


def test_samples_begun_under_an_older_version_are_stopped_and_the_rest_go_on():
    core = TorchEngineCore(tiny_moe(seed=0), max_batch_size=2)  # its own model: the update below changes it
    core.add(make_request(0, [5, 6, 7], n=2, max_tokens=30, ignore_eos=True))  # both decoding under version 0
    core.add(make_request(1, [8, 9], max_tokens=30, ignore_eos=True))  # waits for a slot
    for _ in range(3):
        assert core.step() == []
    load_version(core, 1, seed=1)
    stopped = core.abort_started_before(1)
    assert sorted(s.rollout_id for s in stopped) == ["g0/0", "g0/1"]
    assert all(s.finish_reason == "abort" and s.policy_version_first == 0 for s in stopped)
    assert all(0 < s.num_tokens < 30 and s.logprobs.shape == s.token_ids.shape for s in stopped)  # kept so far
    assert core.abort_started_before(1) == [] and core.running == 0 and core.waiting == 1
    rest = core.run_to_completion()
    assert [(s.rollout_id, s.policy_version_first, s.num_tokens) for s in rest] == [("g1/0", 1, 30)]


def test_a_groups_prompt_is_prefilled_once_for_all_its_samples(moe):
    core = TorchEngineCore(moe, max_batch_size=16, seed=3)
    prefilled: list[int] = []
    prefill = core._prefill
    core._prefill = lambda joiners, longest: (prefilled.append(len(joiners)), prefill(joiners, longest))[1]
    core.add(make_request(0, [20, 21, 22], n=5, max_tokens=6))
    core.add(make_request(1, [30, 31], n=3, max_tokens=6))
    samples = core.run_to_completion()
    assert prefilled == [2]  # two prompts, eight rows
    assert sorted(s.rollout_id for s in samples) == sorted([f"g0/{i}" for i in range(5)] + [f"g1/{i}" for i in range(3)])
    # The samples of a group still differ: each row samples on its own.
    assert len({tuple(s.token_ids) for s in samples if s.group_id == "g0"}) > 1


# ------------------------------------------------------------------------------------------ stops


def test_stop_token_ids_eos_and_length(moe):
    core = TorchEngineCore(moe, max_batch_size=2)
    core.add(make_request(0, [30, 31], temperature=0.0, max_tokens=20, ignore_eos=True))
    (free,) = core.run_to_completion()
    assert free.finish_reason == "length" and free.num_tokens == 20
    target = int(free.token_ids[6])
    first = free.token_ids.tolist().index(target)
    core.add(make_request(1, [30, 31], temperature=0.0, max_tokens=20, stop_token_ids=[target], ignore_eos=True))
    (stopped,) = core.run_to_completion()
    assert stopped.finish_reason == "stop" and stopped.stop_reason == target
    assert stopped.token_ids.tolist() == free.token_ids.tolist()[: first + 1]  # the stop token is kept
    # The same id as an eos of the model config: finish "stop" with no stop reason, unless ignore_eos.
    eos_core = TorchEngineCore(moe, max_batch_size=2)
    eos_core._eos = frozenset({target})
    eos_core.add(make_request(2, [30, 31], temperature=0.0, max_tokens=20))
    (eos,) = eos_core.run_to_completion()
    assert (eos.finish_reason, eos.stop_reason, eos.num_tokens) == ("stop", None, first + 1)


def test_context_length_caps_the_response(moe):
    core = TorchEngineCore(moe, max_batch_size=2, max_model_len=16)
    core.add(make_request(0, list(range(2, 12)), max_tokens=50, ignore_eos=True))
    (s,) = core.run_to_completion()
    assert (s.finish_reason, s.num_tokens) == ("length", 6)


def test_stop_strings_cut_text_and_keep_tokens():
    tokenizer = byte_tokenizer()
    model = tiny_dense(seed=3)
    prompt = tokenizer.encode("ab", add_special_tokens=False)
    core = TorchEngineCore(model, tokenizer, max_batch_size=2)
    core.add(make_request(0, prompt, temperature=0.0, max_tokens=40, ignore_eos=True))
    (free,) = core.run_to_completion()
    text = tokenizer.decode(free.token_ids.tolist(), skip_special_tokens=True)
    stop = text[10:13]
    assert len(stop) == 3
    at = text.find(stop)
    core.add(make_request(1, prompt, temperature=0.0, max_tokens=40, ignore_eos=True, stop=[stop]))
    (cut,) = core.run_to_completion()
    assert (cut.finish_reason, cut.stop_reason) == ("stop", stop)
    assert cut.text == text[:at]
    decoded = tokenizer.decode(cut.token_ids.tolist(), skip_special_tokens=True)
    assert decoded.endswith(stop) or stop in decoded  # tokens run up to the one that completed the string
    assert cut.token_ids.tolist() == free.token_ids.tolist()[: cut.num_tokens]
    core.add(make_request(2, prompt, temperature=0.0, max_tokens=40, ignore_eos=True, stop=[stop],
                     include_stop_str_in_output=True))
    (kept,) = core.run_to_completion()
    assert kept.text == text[: at + len(stop)]


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "params, message",
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ],
)
def test_bad_sampling_parameters_are_refused(params, message):
    with pytest.raises(RequestError, match=message):
        SamplingParams(**params)


def test_bad_requests_are_refused(moe):
    core = TorchEngineCore(moe, max_batch_size=2, max_model_len=32)
    with pytest.raises(RequestError, match="no tokens"):
        GroupRequest("g", "p", [])
    with pytest.raises(RequestError, match="no room"):
        core.add(GroupRequest("g", "p", list(range(2, 40))))
    with pytest.raises(RequestError, match="vocabulary"):
        core.add(GroupRequest("g", "p", [5, 100_000]))
    with pytest.raises(RequestError, match="tokenizer"):
        core.add(GroupRequest("g", "p", [5, 6], SamplingParams(stop=["x"])))
    core.add(GroupRequest("g", "p", [5, 6]))
    with pytest.raises(RequestError, match="already"):
        core.add(GroupRequest("g", "p", [5, 6]))


# ------------------------------------------------------------------------------------------ async engine, rollouts


def test_async_engine_streams_samples_as_they_finish(moe):
    async def main():
        async with TorchEngine(TorchEngineCore(moe, max_batch_size=4)) as engine:
            engine.submit(make_request(0, [40, 41], max_tokens=40, ignore_eos=True))
            engine.submit(make_request(1, [42, 43], n=2, max_tokens=4, ignore_eos=True))
            order = [await engine.next_completed(timeout=30) for _ in range(3)]
            assert [s.group_id for s in order] == ["g1", "g1", "g0"]
            await engine.pause()
            engine.submit(make_request(2, [44], max_tokens=3, ignore_eos=True))
            assert await engine.next_completed(timeout=0.3) is None  # paused: nothing decodes
            await engine.resume()
            late = await engine.next_completed(timeout=30)
            assert late.group_id == "g2"
            stats = engine.stats()
            assert stats.completed_samples == 4 and stats.generated_tokens == 40 + 8 + 3
            abort = make_request(3, [45], max_tokens=200, ignore_eos=True)
            engine.submit(abort)
            engine.abort("g3")
            aborted = await engine.next_completed(timeout=30)
            assert aborted.finish_reason == "abort"

    asyncio.run(main())


def test_completed_samples_become_a_pending_rollout_batch(moe):
    core = TorchEngineCore(moe, max_batch_size=4)
    core.add(GroupRequest("g7", "p7", [9, 10, 11], SamplingParams(n=3, max_tokens=5), reward_type="code"))
    samples = core.run_to_completion()
    batch = samples_to_rollouts(samples, tokenizer=byte_tokenizer())
    batch = codec.decode(codec.encode(batch, ROLLOUT), ROLLOUT)
    assert batch.num_rows == 3
    assert batch.column("reward").null_count == 3
    assert set(batch.column("verdict").to_pylist()) == {"pending"}
    assert set(batch.column("reward_type").to_pylist()) == {"code"}
    assert sorted(batch.column("rollout_id").to_pylist()) == ["g7/0", "g7/1", "g7/2"]
    lengths = [len(x) for x in batch.column("response_token_ids").to_pylist()]
    assert lengths == [len(x) for x in batch.column("behaviour_logprobs").to_pylist()]


# ------------------------------------------------------------------------------------------ vLLM (GPU only)

from ring_async.engines.generation.vllm_engine import vllm_unavailable_reason  # noqa: E402

VLLM_MISSING = vllm_unavailable_reason()
needs_vllm = pytest.mark.skipif(
    VLLM_MISSING is not None, reason=f"the vLLM engine runs only where vLLM and a GPU are: {VLLM_MISSING}"
)


@pytest.fixture(scope="module")
def embedded_policy_path():
    """The embedded tiny policy folder (what the default run serves), built or taken from the cache."""
    from ring_async.config import RingConfig
    from ring_async.policy.embedded import initial_policy_path

    return initial_policy_path(RingConfig())


def test_the_vllm_engine_refuses_to_start_without_vllm_or_a_gpu():
    from ring_async.engines.generation import EngineUnavailableError
    from ring_async.engines.generation.vllm_engine import VllmEngine

    if VLLM_MISSING is None:
        pytest.skip("vLLM and a GPU are present")
    with pytest.raises(EngineUnavailableError, match="vLLM"):
        VllmEngine("/nonexistent")


@needs_vllm
def test_vllm_engine_greedy_and_logprobs_match_the_model(embedded_policy_path, capsys):
    from ring_async.engines.generation.vllm_engine import VllmEngine
    from ring_async.policy.model import load_policy

    policy = load_policy(embedded_policy_path, device="cuda", dtype=torch.float32)
    batch = prompts(4, seed=9, low=5, high=30)

    async def main():
        engine = VllmEngine(embedded_policy_path, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3)
        async with engine:
            greedy = await engine.generate([make_request(i, p, temperature=0.0, max_tokens=24, ignore_eos=True)
                                            for i, p in enumerate(batch)])
            sampled = await engine.generate([make_request(10 + i, p, n=2, max_tokens=24)
                                             for i, p in enumerate(batch)])
        return greedy, sampled

    greedy, sampled = asyncio.run(main())
    for s in greedy:
        prompt = torch.tensor([list(s.prompt_token_ids)], device="cuda")
        out = policy.model.generate(prompt, max_new_tokens=24, do_sample=False, eos_token_id=None,
                                    pad_token_id=policy.tokenizer.pad_token_id)
        assert out[0, prompt.shape[1]:].tolist() == s.token_ids.tolist()
    worst = 0.0
    for s in sampled:
        reference = teacher_forced_logprobs(policy.model, list(s.prompt_token_ids), s.token_ids.tolist())
        worst = max(worst, float((reference - torch.from_numpy(s.logprobs)).abs().max()))
    with capsys.disabled():
        print(f"\n[logprob parity] vLLM float32: max |vLLM - teacher forcing| = {worst:.3g}")
    assert worst < 1e-2


@needs_vllm
def test_vllm_engine_weight_updates_are_checked_applied_and_recorded(embedded_policy_path):
    import copy
    import dataclasses

    from ring_async.engines.generation import WeightUpdateError, iter_buckets
    from ring_async.engines.generation.vllm_engine import VllmEngine
    from ring_async.policy.model import load_policy

    learner = copy.deepcopy(load_policy(embedded_policy_path).model)
    with torch.no_grad():
        for parameter in learner.parameters():
            parameter.add_(1e-2)
    buckets = list(iter_buckets(learner, version=1, bucket_bytes=1 << 20))
    flipped = bytearray(buckets[0].payload)
    flipped[-1] ^= 0xFF

    async def main():
        engine = VllmEngine(embedded_policy_path, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3)
        async with engine:
            with pytest.raises(WeightUpdateError, match="checksum mismatch"):
                await engine.update_weights([dataclasses.replace(buckets[0], payload=bytes(flipped)), *buckets[1:]])
            assert engine.policy_version == 0
            engine.submit(make_request(0, [5, 6, 7], n=4, max_tokens=200, ignore_eos=True))
            await asyncio.sleep(0.05)
            report = await engine.update_weights(buckets, timeout_s=60)
            spanning = [await engine.next_completed(timeout=120) for _ in range(4)]
            after = await engine.generate([make_request(1, [5, 6, 7], max_tokens=8)])
            return report, spanning, after

    report, spanning, after = asyncio.run(main())
    assert report.version == 1 and report.tensors == sum(len(b.tensor_names) for b in buckets)
    assert all(s.policy_version_last == 1 for s in spanning)
    assert all(s.policy_version_first <= s.policy_version_last for s in spanning)
    assert (after[0].policy_version_first, after[0].policy_version_last) == (1, 1)


# ------------------------------------------------------------------------------------------ building from the config


def test_the_config_builds_the_torch_engine_here_and_refuses_vllm(tmp_path):
    from ring_async.config import load_config
    from ring_async.engines.generation import EngineUnavailableError
    from ring_async.engines.generation.factory import build_engine, choose_engine

    tiny_moe().save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    config = load_config(overrides={"generation.max_batch_size": 3, "generation.scheduling": "static",
                                    "generation.logprobs_mode": "processed"})
    if VLLM_MISSING is not None:
        assert choose_engine(config) == "torch"
        with pytest.raises(EngineUnavailableError, match="generation.engine is 'vllm'"):
            choose_engine(load_config(overrides={"generation.engine": "vllm"}))
    engine = build_engine(load_config(overrides={**{"generation.engine": "torch"}, "generation.max_batch_size": 3,
                                                 "generation.scheduling": "static"}), tmp_path, policy_version=4)
    assert isinstance(engine, TorchEngine)
    assert (engine.core.max_batch_size, engine.core.scheduling, engine.policy_version) == (3, "static", 4)
    assert engine.core.tokenizer is not None
