"""Versioned weight updates: bucketed, checked, atomic between steps, recorded per sample; bad buckets change nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import pytest
import torch
from safetensors.torch import save as save_safetensors

from _tiny_lm import one_torch_thread, tiny_dense, tiny_moe
from ring_async.engines.generation import (
    GroupRequest,
    SamplingParams,
    TorchEngine,
    TorchEngineCore,
    WeightBucket,
    WeightUpdateError,
    WeightUpdateTimeout,
    iter_buckets,
)
from ring_async.engines.generation.errors import StaleWeightVersionError
from ring_async.engines.generation.weights import BUCKET_KEY, VERSION_KEY, WeightManifest, _read_header


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


def greedy(core: TorchEngineCore, prompt=(7, 8, 9), tokens: int = 12) -> list[tuple[int, float]]:
    """What the engine serves: its greedy tokens and their logprobs (random tied-embedding models repeat tokens,
    the logprobs tell weights apart)."""
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    core.add(GroupRequest(f"probe-{core.completed_samples}", "probe", prompt, params))
    (sample,) = core.run_to_completion()
    return list(zip(sample.token_ids.tolist(), sample.logprobs.round(5).tolist()))


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(model, reference: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def rebucket(bucket: WeightBucket, tensors: dict[str, torch.Tensor], **overrides) -> WeightBucket:
    """A well-formed bucket (checksum, names and metadata consistent) holding other tensors: only the content is
    wrong, so the refusal must come from checking it against the served model."""
    version = overrides.get("version", bucket.version)
    index, count = overrides.get("index", bucket.index), overrides.get("count", bucket.count)
    payload = save_safetensors(tensors, metadata={VERSION_KEY: str(version), BUCKET_KEY: f"{index}/{count}"})
    names, _ = _read_header(payload)
    return WeightBucket(version, index, count, payload, hashlib.sha256(payload).hexdigest(), tuple(names))


@pytest.fixture
def served():
    """An engine serving model A (version 0), and the buckets of model B (same shapes, other values) as version 1."""
    engine = TorchEngineCore(tiny_moe(seed=0), max_batch_size=4)
    donor = tiny_moe(seed=1)
    buckets = list(iter_buckets(donor, version=1, bucket_bytes=20_000))
    return engine, donor, buckets


def test_an_update_loads_every_weight_and_bumps_the_version(served):
    engine, donor, buckets = served
    assert len(buckets) > 3  # really bucketed
    before = greedy(engine)
    assert engine.update_weights(buckets).version == 1
    assert engine.policy_version == 1
    assert same_weights(engine.model, snapshot(donor))
    assert greedy(engine) == greedy(TorchEngineCore(donor, max_batch_size=4)) != before


def test_tied_weights_travel_once():
    model = tiny_moe()
    names = [name for bucket in iter_buckets(model, version=1) for name in bucket.tensor_names]
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    manifest = WeightManifest.from_module(model)
    assert manifest.canonical["lm_head.weight"] == "model.embed_tokens.weight"


def test_in_flight_samples_record_the_versions_they_span(served):
    engine, _, buckets = served
    for i in range(3):
        engine.add(GroupRequest(f"early{i}", "p", [10 + i, 11, 12], SamplingParams(n=2, max_tokens=30, ignore_eos=True)))
    done = []
    for _ in range(5):
        done.extend(engine.step())
    spanning = {(s.request.group_id, s.sample_index) for s in engine._slots if s is not None}
    assert spanning and not done
    engine.update_weights(buckets)  # between two steps
    engine.add(GroupRequest("late", "p", [20, 21], SamplingParams(n=2, max_tokens=5, ignore_eos=True)))
    done.extend(engine.run_to_completion())
    by_key = {(s.group_id, s.sample_index): s for s in done}
    for key in spanning:
        assert (by_key[key].policy_version_first, by_key[key].policy_version_last) == (0, 1)
    for s in done:
        if s.group_id == "late":
            assert (s.policy_version_first, s.policy_version_last) == (1, 1)
    # No sample mixes versions without saying so: every one decoded both before and after the update is marked.
    assert all(s.mixes_versions == ((s.group_id, s.sample_index) in spanning) for s in done)


def _refused(engine: TorchEngineCore, buckets, message: str, error=WeightUpdateError) -> None:
    reference = snapshot(engine.model)
    before = greedy(engine)
    with pytest.raises(error, match=message):
        engine.update_weights(buckets)
    assert engine.policy_version == 0
    assert same_weights(engine.model, reference)
    assert greedy(engine) == before  # still serving the old version


def test_a_corrupted_bucket_is_refused_and_nothing_changes(served):
    engine, _, buckets = served
    bad = bytearray(buckets[2].payload)
    bad[len(bad) // 2] ^= 0xFF
    corrupted = dataclasses.replace(buckets[2], payload=bytes(bad))
    _refused(engine, [*buckets[:2], corrupted, *buckets[3:]], "bucket 3/.* checksum mismatch")


def test_garbage_with_a_matching_checksum_is_refused(served):
    engine, _, buckets = served
    junk = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"
    garbage = dataclasses.replace(buckets[0], payload=junk, sha256=hashlib.sha256(junk).hexdigest())
    _refused(engine, [garbage, *buckets[1:]], "not a safetensors payload")


def test_a_shape_mismatch_is_refused(served):
    engine, _, buckets = served
    other = {k: v for k, v in tiny_moe(seed=2, hidden=32).state_dict().items() if k in buckets[0].tensor_names}
    _refused(engine, [rebucket(buckets[0], other), *buckets[1:]], r"has shape \(320, 32\), the served model has \(320, 64\)")


def test_a_dtype_mismatch_is_refused(served):
    engine, donor, buckets = served
    names = buckets[0].tensor_names
    halves = {k: v.to(torch.bfloat16) for k, v in donor.state_dict().items() if k in names}
    _refused(engine, [rebucket(buckets[0], halves), *buckets[1:]], "torch.bfloat16, the served model is torch.float32")


def test_an_unknown_tensor_is_refused(served):
    engine, _, buckets = served
    _refused(engine, [rebucket(buckets[0], {"model.extra.weight": torch.zeros(3)}), *buckets[1:]], "unknown tensor")


def test_weights_of_another_architecture_are_refused(served):
    engine, _, _ = served
    _refused(engine, list(iter_buckets(tiny_dense(), version=1)), "unknown tensor|has shape")


def test_non_finite_weights_are_refused(served):
    engine, donor, buckets = served
    names = buckets[0].tensor_names
    poisoned = {k: v.clone() for k, v in donor.state_dict().items() if k in names}
    next(iter(poisoned.values()))[0].fill_(float("nan"))
    _refused(engine, [rebucket(buckets[0], poisoned), *buckets[1:]], "NaN")


def test_incomplete_or_disordered_updates_are_refused(served):
    engine, _, buckets = served
    _refused(engine, buckets[:-1], r"incomplete: bucket\(s\) \[\d+\] .* never arrived")
    _refused(engine, [buckets[1], buckets[0], *buckets[2:]], "out of order")
    _refused(engine, [buckets[0], buckets[0]], "received twice")
    # A bucket that covers a tensor twice, and an update that leaves weights out.
    first = {k: v for k, v in tiny_moe(seed=1).state_dict().items() if k in buckets[0].tensor_names}
    only = rebucket(buckets[0], first, count=1)
    _refused(engine, [only], r"incomplete: \d+ weight\(s\) missing")


def test_mixed_up_buckets_are_refused(served):
    engine, donor, buckets = served
    later = list(iter_buckets(donor, version=2, bucket_bytes=20_000))
    _refused(engine, [buckets[0], later[1]], "belongs to version 2")
    relabelled = dataclasses.replace(later[0], version=1)  # version 2's bytes passed off as version 1
    _refused(engine, [relabelled, *buckets[1:]], "marked ring_async.version='2'")
    several = next(i for i, b in enumerate(buckets) if len(b.tensor_names) > 1)
    wrong_names = dataclasses.replace(buckets[several], tensor_names=tuple(reversed(buckets[several].tensor_names)))
    _refused(engine, [*buckets[:several], wrong_names, *buckets[several + 1 :]], "disagree with the safetensors header")
    _refused(engine, [dataclasses.replace(buckets[0], format="pickle"), *buckets[1:]], "format 'pickle'")


def test_a_stale_version_is_refused(served):
    engine, donor, buckets = served
    engine.update_weights(buckets)
    again = list(iter_buckets(donor, version=1))
    with pytest.raises(StaleWeightVersionError, match="not newer than the served version 1"):
        engine.update_weights(again)
    assert engine.policy_version == 1 and engine.refused_weight_updates == 1


def test_async_update_lands_between_steps_while_generating(served):
    core, _, buckets = served

    async def main():
        async with TorchEngine(core) as engine:
            engine.submit(GroupRequest("g", "p", [5, 6], SamplingParams(n=4, max_tokens=200, ignore_eos=True)))
            while core.meter.total < 20:  # decoding has started
                await asyncio.sleep(0.005)
            version = (await engine.update_weights(buckets, timeout_s=30)).version
            samples = [await engine.next_completed(timeout=60) for _ in range(4)]
            return version, samples

    version, samples = asyncio.run(main())
    assert version == 1
    assert all((s.policy_version_first, s.policy_version_last) == (0, 1) for s in samples)


def test_a_stalled_update_times_out_with_a_clear_error_and_nothing_changes(served):
    core, _, buckets = served
    reference = snapshot(core.model)

    async def stalled():
        yield buckets[0]
        await asyncio.sleep(30)  # the publisher died after one bucket
        yield buckets[1]

    async def main():
        async with TorchEngine(core) as engine:
            with pytest.raises(WeightUpdateTimeout, match=r"version 1 timed out after 0\.\d s with 1 of \d+ buckets"):
                await engine.update_weights(stalled(), timeout_s=0.3)
            assert engine.policy_version == 0
            # still serving: a request completes with the old weights
            samples = await engine.generate([GroupRequest("g", "p", [5, 6], SamplingParams(max_tokens=4))])
            assert samples[0].policy_version_last == 0
            return engine.stats()

    stats = asyncio.run(main())
    assert same_weights(core.model, reference)
    assert stats.refused_weight_updates == 1 and stats.weight_updates == 0
