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
    max_restarts: int = Field(
        3, ge=0, description="Times Ray restarts a role's actor after its process dies; the launcher starts it again "
        "on its old ports and tells its peers. 0: a dead role ends the run."
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
    select_order: Literal["completed", "version"] = Field(
        "completed",
        description="Order in which pooled groups fill a step. completed: the oldest completed group first; version: "
        "the oldest policy version first (the groups that go stale soonest), completion order among equals.",
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
    lease_within_staleness: bool = Field(
        True,
        description="async: no new lease while the still-usable pool and the projected yield of the groups out "
        "already fill the steps a new rollout could join before it goes stale (max_staleness + 1, less those in "
        "training).",
    )
    expected_response_tokens: int = Field(
        256, ge=1, description="Estimate of a response's length, used to count in-flight groups against the pool bound."
    )
    shuffle_prompts: bool = Field(True, description="Shuffle the dataset stream (seeded by run.seed).")


class ModelConfig(_Section):
    """The policy (DESIGN §5): a user's checkpoint, or the tiny MoE model ring-async builds offline."""

    path: str | None = Field(
        None, description="Hugging Face model folder of a real checkpoint; null builds the embedded tiny policy."
    )
    architecture: Literal["moe", "dense"] = Field(
        "moe", description="Embedded policy: moe (Qwen3-MoE layout) or dense (Qwen3 layout)."
    )
    vocab_size: int = Field(1024, ge=300, description="Embedded tokenizer: upper bound of the byte-level BPE vocabulary.")
    hidden_size: int = Field(128, ge=8, description="Embedded policy: width of the residual stream.")
    num_layers: int = Field(4, ge=1, description="Embedded policy: decoder layers.")
    num_heads: int = Field(4, ge=1, description="Embedded policy: attention heads (head size = hidden_size / num_heads).")
    num_kv_heads: int = Field(2, ge=1, description="Embedded policy: key/value heads (grouped-query attention).")
    num_experts: int = Field(8, ge=1, description="Embedded MoE policy: experts per layer.")
    experts_per_token: int = Field(2, ge=1, description="Embedded MoE policy: experts each token is routed to (top-k).")
    expert_size: int = Field(128, ge=1, description="Embedded MoE policy: hidden width of one expert's MLP.")
    mlp_size: int = Field(512, ge=1, description="Embedded dense policy: hidden width of the MLP.")
    max_length: int = Field(
        512, ge=16, description="Longest prompt + response in tokens: the embedded policy's context and SFT's cut-off."
    )
    tie_embeddings: bool = Field(True, description="Embedded policy: share the input embedding and the output head.")

    @model_validator(mode="after")
    def _shapes_fit(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be a multiple of model.num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"model.num_heads ({self.num_heads}) must be a multiple of model.num_kv_heads ({self.num_kv_heads})")
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"model.experts_per_token ({self.experts_per_token}) exceeds model.num_experts ({self.num_experts})"
            )
        return self


class TasksConfig(_Section):
    """Task data: a user's files, or synthetic math and code tasks (docs/policy.md has the file format)."""

    train_files: list[str] = Field(
        default_factory=list, description="JSONL/Parquet task files to train on; empty generates synthetic tasks."
    )
    heldout_files: list[str] = Field(
        default_factory=list,
        description="JSONL/Parquet held-out tasks; empty splits train_files by heldout_share. Train records whose "
        "prompt is also held out are dropped.",
    )
    heldout_share: float = Field(
        0.2, gt=0, lt=1, description="Share of problems (by content hash) that belong to the held-out split."
    )
    math_train: int = Field(20000, ge=0, description="Synthetic math tasks in the train split.")
    math_heldout: int = Field(500, ge=0, description="Synthetic math tasks in the held-out split.")
    math_difficulty: int = Field(2, ge=1, le=5, description="Synthetic math level 1-5: numbers per expression and size.")
    linear_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of synthetic math tasks that are linear equations a*x + b = c."
    )
    code_train: int = Field(480, ge=0, description="Synthetic code tasks in the train split.")
    code_heldout: int = Field(30, ge=0, description="Synthetic code tasks in the held-out split.")
    code_difficulty: int = Field(1, ge=1, le=3, description="Synthetic code level 1-3: templates up to that level.")

    @model_validator(mode="after")
    def _heldout_needs_train(self) -> "TasksConfig":
        if self.heldout_files and not self.train_files:
            raise ValueError("tasks.heldout_files needs tasks.train_files (synthetic tasks make their own held-out split)")
        return self


class SftConfig(_Section):
    """Distillation SFT on teacher responses (DeepSpeed; loss on response tokens only)."""

    epochs: int = Field(3, ge=1, description="Passes over the train split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (null: epochs decide).")
    batch_size: int = Field(32, ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decay floor, as a fraction of lr.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clipping.")
    save_every_steps: int | None = Field(
        None, ge=1, description="Checkpoint every N optimizer steps; null: at the end of every epoch."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU.")
    bf16: bool = Field(True, description="Train in bf16 on CUDA (CPU always trains in fp32).")


class CheckpointSelectionConfig(_Section):
    """Choosing the SFT checkpoint RL starts from, by the policy's token entropy on its own samples (DESIGN §2)."""

    entropy_band: tuple[float, float] = Field(
        (0.08, 0.15), description="Target mean token entropy [low, high] in nats at temperature 1.0."
    )
    when_none_in_band: Literal["nearest", "error"] = Field(
        "nearest", description="nearest: take the checkpoint closest to the band (reported); error: fail."
    )
    probe_prompts: int = Field(128, ge=1, description="Held-out prompts sampled per checkpoint.")
    probe_reward_types: list[Literal["math", "code"]] = Field(
        ["math"], min_length=1, description="Reward types the probe set draws from (code scores need the sandbox)."
    )
    samples_per_prompt: int = Field(1, ge=1, description="Responses sampled per probe prompt.")
    max_new_tokens: int = Field(128, ge=1, description="Longest sampled response.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the probe (the paper's RL setting: 1.0).")

    @model_validator(mode="after")
    def _band_is_ordered(self) -> "CheckpointSelectionConfig":
        low, high = self.entropy_band
        if not 0 <= low <= high:
            raise ValueError(f"checkpoint_selection.entropy_band must satisfy 0 <= low <= high (got [{low}, {high}])")
        return self


class CacheConfig(_Section):
    """Built policies, task files and SFT runs, kept by config hash so later runs skip minutes of work."""

    dir: str | None = Field(None, description="Cache folder; null: $RING_ASYNC_CACHE, else .cache/ring-async.")
    reuse: bool = Field(True, description="false: rebuild every artifact and replace its cached copy.")


class GenerationConfig(_Section):
    """Generators (docs/generation.md): the engine, its sampling (vLLM's semantics), leasing and weight updates."""

    engine: Literal["auto", "torch", "vllm"] = Field(
        "auto", description="auto: vLLM when it is installed and a GPU is present, else the torch engine."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch engine: auto picks CUDA when present.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Serving dtype; auto: the checkpoint's dtype (bfloat16 for vLLM on GPU)."
    )
    max_batch_size: int = Field(128, ge=1, description="Sequences decoded together (batch slots of the torch engine).")
    max_model_len: int | None = Field(
        None, ge=2, description="Longest prompt + response in tokens; null: the model's max_position_embeddings."
    )
    scheduling: Literal["continuous", "static"] = Field(
        "continuous",
        description="continuous: a finished sequence's slot is refilled at once; static: only an empty batch admits "
        "(baseline).",
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; below 1e-5 is greedy (as in vLLM).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass; 1 keeps every token.")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 keeps every token.")
    max_tokens: int = Field(256, ge=1, description="Most tokens sampled per response.")
    stop: list[str] = Field(default_factory=list, description="Stop strings (the text is cut before them).")
    stop_token_ids: list[int] = Field(
        default_factory=list, description="Extra token ids that end a response (kept in it), besides eos."
    )
    logprobs_mode: Literal["raw", "processed"] = Field(
        "raw",
        description="raw: logprobs of the model's distribution (vLLM's default); processed: of the distribution "
        "sampled from (after temperature, top-k, top-p).",
    )
    seed: int | None = Field(None, ge=0, description="Sampling seed; null: run.seed.")
    torch_threads: int = Field(0, ge=0, description="torch engine intra-op threads; 0: torch's default.")
    groups_per_lease: int = Field(4, ge=1, description="Most prompt groups asked for in one lease.")
    max_inflight_groups: int = Field(
        16, ge=1, description="Leased groups a generator holds at once (generating or waiting for a slot)."
    )
    abort_stale: bool = Field(
        True,
        description="Stop a sample as soon as the learner's version makes it stale (begun under a version older than "
        "the latest minus algorithm.max_staleness): it would be dropped, and its batch slot goes to a fresh group.",
    )
    backpressure_wait_s: float = Field(
        1.0, gt=0, description="Seconds without leasing after the broker signals back-pressure (in-flight work goes on)."
    )
    idle_wait_s: float = Field(0.5, gt=0, description="Seconds before leasing again when the broker had no prompts.")
    weight_update_timeout_s: float = Field(
        60.0, gt=0, description="A weight update not received and applied within this fails; the old weights stay."
    )
    weight_bucket_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Target size of one weight bucket (safetensors) on the CPU path."
    )
    check_finite_weights: bool = Field(True, description="Refuse weight updates holding NaN or infinite values.")
    vllm_gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vLLM: share of GPU memory for weights and KV cache."
    )
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs one engine shards the model over.")
    vllm_enforce_eager: bool = Field(False, description="vLLM: no CUDA graphs (slower decoding, faster start).")


class LearnerConfig(_Section):
    """Learners (docs/learner.md): one DeepSpeed optimizer step per TrainBatch, then new weights for the generators."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU (gloo).")
    zero_stage: Literal[0, 1, 2] = Field(
        0, description="DeepSpeed ZeRO stage (3 is not offered: publishing weights would need a gather every step)."
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="adamw (DeepSpeed's, fused on CUDA); sgd: plain SGD, an exact read of the gradient."
    )
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (the tiny default's; the paper uses 3e-6 at scale).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="constant after warm-up, or cosine decay to min_lr_ratio over total_steps."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    total_steps: int | None = Field(None, ge=1, description="Length of the cosine schedule in optimizer steps.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine floor, as a fraction of lr.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this; 0 disables clipping.")
    max_tokens_per_micro_batch: int = Field(
        8192, ge=16, description="Padded prompt + response tokens per micro-batch (token-balanced packing)."
    )
    bf16: bool = Field(True, description="Train in bf16 on CUDA (the CPU always trains in fp32).")
    logprob_chunk_rows: int | None = Field(
        4096, ge=1, description="Positions per chunk when upcasting logits for logprobs/entropy (bounds memory)."
    )
    checkpoint_dir: str | None = Field(None, description="Where checkpoints go; null: <run.run_dir>/checkpoints.")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps; null: on request.")
    keep_checkpoints: int = Field(2, ge=1, description="Complete checkpoints kept; older ones are deleted.")
    publish_timeout_s: float = Field(60.0, gt=0, description="A weight push to a generator not done by then fails.")
    batch_wait_s: float = Field(5.0, ge=0, description="How long one NextTrainBatch call waits for a ready step.")

    @model_validator(mode="after")
    def _schedule_has_length(self) -> "LearnerConfig":
        if self.lr_schedule == "cosine" and self.total_steps is None:
            raise ValueError("learner.lr_schedule 'cosine' needs learner.total_steps")
        if self.total_steps is not None and self.warmup_steps > self.total_steps:
            raise ValueError(
                f"learner.warmup_steps ({self.warmup_steps}) exceeds learner.total_steps ({self.total_steps})"
            )
        return self


class RingConfig(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    checkpoint_selection: CheckpointSelectionConfig = Field(default_factory=CheckpointSelectionConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)

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
