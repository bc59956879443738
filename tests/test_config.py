from pathlib import Path

import pytest

from ring_async.config import RingConfig, config_from_dict, load_config
from ring_async.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_run_and_the_shipped_default_file_matches_them():
    assert load_config() == RingConfig()
    assert load_config(ROOT / "configs" / "default.yaml") == RingConfig()


def test_yaml_overrides_only_what_it_names(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm:\n  budget_tokens: 4096\n  cut: whole\n")
    config = load_config(path)
    assert config.algorithm.budget_tokens == 4096
    assert config.algorithm.cut == "whole"
    assert config.broker == RingConfig().broker


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("broker:\n  group_sise: 4\n")
    with pytest.raises(ConfigError, match=r"broker\.group_sise: unknown key"):
        load_config(path)


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match=r"learnr: unknown key"):
        config_from_dict({"learnr": {}})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("algorithm.budget_tokens", 0, r"algorithm\.budget_tokens: .*greater than 0.*\(got 0\)"),
        ("algorithm.cut", "half", r"algorithm\.cut: .*'exact' or 'whole'.*\(got 'half'\)"),
        ("algorithm.aggregation", "mean", r"algorithm\.aggregation: .*\(got 'mean'\)"),
        ("algorithm.clip_eps", 1.5, r"algorithm\.clip_eps: .*\(got 1\.5\)"),
        ("broker.group_size", "many", r"broker\.group_size: .*\(got 'many'\)"),
        ("run.mode", "turbo", r"run\.mode: .*\(got 'turbo'\)"),
    ],
)
def test_bad_values_name_key_and_value(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={key: value})


def test_sync_mode_requires_on_policy():
    with pytest.raises(ConfigError, match=r"run\.mode 'sync'.*algorithm\.max_staleness: 0 \(got 1\)"):
        load_config(overrides={"run.mode": "sync"})
    assert load_config(overrides={"run.mode": "sync", "algorithm.max_staleness": 0}).run.mode == "sync"


def test_pool_bound_must_admit_one_step():
    with pytest.raises(ConfigError, match=r"broker\.max_pool_tokens \(100\) must be at least algorithm\.budget_tokens"):
        load_config(overrides={"broker.max_pool_tokens": 100})


def test_bad_yaml_reports_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm:\n  cut: [exact\n")
    with pytest.raises(ConfigError, match=r"invalid YAML in .*c\.yaml at line \d+"):
        load_config(path)


def test_non_mapping_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_config_is_frozen_and_digest_is_stable():
    config = RingConfig()
    with pytest.raises(Exception):
        config.algorithm.budget_tokens = 1  # type: ignore[misc]
    assert config.digest() == RingConfig().digest()
    assert config.digest() != load_config(overrides={"run.seed": 1}).digest()


def test_every_key_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    config = RingConfig()
    for section, value in config.model_dump().items():
        for key in value:
            assert f"`{section}.{key}`" in doc, f"{section}.{key} is missing from docs/configuration.md"
