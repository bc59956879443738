import math
import random

import pytest

from ring_async.config import ModelConfig, load_config
from ring_async.errors import ConfigError
from ring_async.policy.model import build_policy, load_policy, save_policy
from ring_async.policy.tokenizer import build_tokenizer
from ring_async.sft.plot import plot_selection
from ring_async.sft.probe import probe
from ring_async.sft.scoring import Scorer
from ring_async.sft.selection import CheckpointMeasurement, SelectionError, SelectionReport, choose
from ring_async.tasks.code_tasks import code_task
from ring_async.tasks.math_tasks import math_task

BAND = (0.2, 0.4)


def curve(entropies, accuracies=None):
    accuracies = accuracies or [0.5] * len(entropies)
    return [
        CheckpointMeasurement(path=f"ckpt/{i}", step=100 * (i + 1), epoch=i + 1.0, sft_tokens=1000 * (i + 1),
                              sft_loss=1.0 / (i + 1), entropy=e, accuracy=a, token_efficiency=None,
                              mean_response_tokens=40.0, truncated=0.0)
        for i, (e, a) in enumerate(zip(entropies, accuracies))
    ]


def test_one_checkpoint_in_band_is_taken():
    choice = choose(curve([0.9, 0.55, 0.3, 0.1, 0.05], [0.1, 0.3, 0.5, 0.7, 0.8]), BAND)
    assert choice.index == 2 and choice.in_band


def test_several_in_band_take_the_most_accurate_then_the_centre_then_the_earliest():
    assert choose(curve([0.8, 0.38, 0.32, 0.22, 0.1], [0.2, 0.4, 0.6, 0.5, 0.9]), BAND).index == 2
    assert choose(curve([0.8, 0.38, 0.31, 0.22, 0.1], [0.2, 0.6, 0.6, 0.6, 0.9]), BAND).index == 2
    assert choose(curve([0.35, 0.25, 0.1], [0.6, 0.6, 0.9]), BAND).index == 0  # equally far from 0.3: earliest


def test_none_in_band_takes_the_nearest_or_refuses():
    above = choose(curve([1.2, 0.9, 0.7, 0.6]), BAND)
    assert above.index == 3 and not above.in_band and "above" in above.reason
    below = choose(curve([0.15, 0.1, 0.05]), BAND)
    assert below.index == 0 and "below" in below.reason
    straddle = choose(curve([0.5, 0.15], [0.3, 0.9]), BAND)  # 0.1 above vs 0.05 below
    assert straddle.index == 1
    with pytest.raises(SelectionError, match=r"no checkpoint has entropy in \[0\.2, 0\.4\]"):
        choose(curve([1.2, 0.9]), BAND, "error")
    with pytest.raises(SelectionError):
        choose([], BAND)


def test_band_must_be_ordered():
    with pytest.raises(ConfigError, match=r"checkpoint_selection\.entropy_band must satisfy"):
        load_config(overrides={"checkpoint_selection.entropy_band": [0.5, 0.2]})


def test_report_round_trips_and_plots(tmp_path):
    measurements = curve([0.9, 0.3, 0.1], [0.2, 0.5, 0.8])
    choice = choose(measurements, BAND)
    report = SelectionReport(BAND, "entropy band", measurements[choice.index], True, choice.reason, measurements)
    png = plot_selection(report, tmp_path / "selection.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.write(tmp_path)
    assert SelectionReport.from_json(report.to_json()) == report


def test_probe_measures_entropy_and_accuracy_on_a_real_policy(tmp_path):
    tokenizer = build_tokenizer(1024)
    small = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, num_experts=2, expert_size=32)
    policy = load_policy(save_policy(build_policy(small, tokenizer, seed=0), tokenizer, tmp_path / "p"))
    rng = random.Random(0)
    records = [math_task(rng, 1) for _ in range(6)]
    result = probe(policy, records, samples_per_prompt=2, max_new_tokens=12, seed=1)
    assert result.samples == 12 and result.scored == 12 and result.accuracy == 0.0
    # An untrained policy is close to uniform over its (padded) vocabulary.
    uniform = math.log(policy.model.config.vocab_size)
    assert 0.9 * uniform < result.mean_entropy <= uniform
    again = probe(policy, records, samples_per_prompt=2, max_new_tokens=12, seed=1)  # seeded: reproducible
    assert (again.mean_entropy, again.mean_response_tokens) == (result.mean_entropy, result.mean_response_tokens)


def test_scorer_uses_the_verifiers():
    rng = random.Random(0)
    math, code = math_task(rng, 2), code_task(rng, 1)
    with Scorer() as scorer:
        assert scorer.score(math, math.response) == 1.0
        assert scorer.score(math, math.response.replace(f"{{{math.answer}}}", "{100000}")) == 0.0
        assert scorer.score(math, "no box") == 0.0
        assert scorer.score(code, "no code block") == 0.0
        verdict = scorer.score(code, code.response)  # runs in the sandbox; None where no sandbox can start here
        assert verdict in (1.0, None)
