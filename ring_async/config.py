"""The one typed configuration tree of ring-async.

Every knob lives here, with a default that runs the embedded CPU setup. A YAML file only overrides what it names;
unknown keys and bad values are errors that name the dotted key and the value (``algorithm.cut: 'half' is not one of
'exact', 'whole'``), raised as :class:`~ring_async.errors.ConfigError` on load, never later in a running actor.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ring_async.errors import ConfigError


class _Section(BaseModel):
    # Frozen so a config handed to an actor cannot drift from the one that was validated and logged.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RunConfig(_Section):
    name: str = Field("default", min_length=1, description="Run name, used in metrics labels and the run directory.")
    run_dir: str = Field("runs/default", description="Where checkpoints, the rollout write-ahead log and plots go.")
    seed: int = Field(0, ge=0, description="Seed for data order, sampling and initialisation.")
    mode: Literal["async", "sync"] = Field(
        "async", description="async: generation runs while the learner trains; sync: generation pauses (baseline)."
    )


class AlgorithmConfig(_Section):
    """C3PO and its comparison modes (DESIGN §2-3)."""

    budget_tokens: int = Field(8192, gt=0, description="Φ: loss-bearing response tokens per optimizer step, global.")
    cut: Literal["exact", "whole"] = Field(
        "exact", description="exact: the straddling response is cut token-exactly at Φ; whole: it is taken whole."
    )
    aggregation: Literal["c3po", "grpo", "token_mean"] = Field(
        "c3po", description="c3po: Σ o_t / Φ; grpo: per-sequence mean then mean; token_mean: Σ o_t / #tokens."
    )
    filter_zero_adv: bool = Field(True, description="Leave groups whose rewards are all equal out of the budget.")
    leftovers: Literal["keep", "discard"] = Field(
        "keep", description="keep: unselected rollouts stay pooled for the next step; discard: dropped (paper)."
    )
    max_staleness: int = Field(
        1, ge=0, description="A rollout of policy version v is usable while learner_version - v <= max_staleness."
    )
    advantage_norm: Literal["std", "none"] = Field(
        "std", description="std: (R - mean) / (std + eps), GRPO; none: R - mean."
    )
    advantage_eps: float = Field(1e-6, gt=0, description="eps in the advantage denominator (std + eps).")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="PPO clip range ε.")
    entropy_coef: float = Field(5e-4, ge=0, description="α_ent: weight of the entropy bonus.")
    kl_coef: float = Field(1e-3, ge=0, description="β: weight of the k3 KL to the frozen reference; 0 skips it.")
    load_balance_coef: float = Field(1e-5, ge=0, description="α_bal: MoE load-balance loss weight.")
    router_z_coef: float = Field(1e-7, ge=0, description="α_z: MoE router z-loss weight.")
    off_policy: Literal["none", "tis", "decoupled"] = Field(
        "none",
        description="none: ratio against behaviour logprobs; tis: truncated importance weight; "
        "decoupled: PPO ratio against learner-recomputed proximal logprobs.",
    )
    tis_cap: float = Field(2.0, gt=0, description="Truncation C of the importance weight in tis mode.")
    decoupled_weight_cap: float | None = Field(
        None, gt=0, description="decoupled mode: tokens whose behaviour importance weight exceeds this are masked."
    )


class BrokerConfig(_Section):
    group_size: int = Field(8, ge=1, description="K: responses sampled per prompt.")
    lease_timeout_s: float = Field(600.0, gt=0, description="A leased prompt group not completed by then is requeued.")
    max_pool_tokens: int = Field(
        65536, gt=0, description="Back-pressure: no new leases while pooled + in-flight tokens exceed this."
    )
    max_inflight_groups: int = Field(64, ge=1, description="Back-pressure: at most this many leased, open groups.")
    expected_response_tokens: int = Field(
        256, ge=1, description="Estimate of a response's length, used to count in-flight groups against the pool bound."
    )
    shuffle_prompts: bool = Field(True, description="Shuffle the dataset stream (seeded by run.seed).")


class RingConfig(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)

    @model_validator(mode="after")
    def _sync_is_on_policy(self) -> "RingConfig":
        if self.run.mode == "sync" and self.algorithm.max_staleness != 0:
            raise ValueError(
                f"run.mode 'sync' is on-policy and needs algorithm.max_staleness: 0 (got {self.algorithm.max_staleness})"
            )
        if self.broker.max_pool_tokens < self.algorithm.budget_tokens:
            raise ValueError(
                f"broker.max_pool_tokens ({self.broker.max_pool_tokens}) must be at least "
                f"algorithm.budget_tokens ({self.algorithm.budget_tokens}), or no step could ever be assembled"
            )
        return self

    def digest(self) -> str:
        """A stable hash of the full config, for caches keyed on what was run."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (value {e['input']!r})")
        elif e["type"] == "value_error":
            lines.append(e["msg"].removeprefix("Value error, "))
        else:
            lines.append(f"{key}: {e['msg']} (got {e['input']!r})")
    return f"invalid config {source}: " + "; ".join(lines)


def config_from_dict(data: Mapping[str, Any] | None, source: str = "<dict>") -> RingConfig:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return RingConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RingConfig:
    """Load a YAML config (None: the embedded default) and apply dotted overrides such as ``{"algorithm.cut": "whole"}``."""
    data: dict[str, Any] = {}
    source = "<default>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config {source}: {err.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"invalid YAML in {source}{where}: {getattr(err, 'problem', err)}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"invalid config {source}: the top level must be a mapping, got {type(loaded).__name__}")
        data = dict(loaded or {})
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"invalid override {dotted}: {part} is not a section")
            node = child
        node[leaf] = value
    return config_from_dict(data, source)
