"""The policy as a Hugging Face causal LM folder: building the embedded tiny model, saving, loading.

The embedded policy uses the stock Qwen3-MoE (or dense Qwen3) architecture of transformers, so the saved folder is an
ordinary checkpoint: ``AutoModelForCausalLM.from_pretrained`` and vLLM load it with no custom code, and the learner
gets router logits for the load-balance and z-losses the same way it would from a real MoE checkpoint. A user's
checkpoint goes through :func:`load_policy` too; nothing downstream knows which one it has.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)
from transformers.utils import logging as hf_logging

from ring_async.config import ModelConfig
from ring_async.policy.errors import PolicyError
from ring_async.policy.tokenizer import stop_token_ids

# The embedding matrix is padded to a multiple of this many rows: GPU kernels (and vLLM's vocab sharding) prefer it.
VOCAB_MULTIPLE = 64
ROPE_THETA = 10000.0


@contextmanager
def _no_hf_progress_bars() -> Iterator[None]:
    # transformers draws a bar for every save and load; checkpoints are saved every epoch and loaded per probe, so
    # the bars would bury ring-async's own progress. Restored afterwards for the caller's own transformers use.
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@dataclass
class Policy:
    """A loaded policy: the model, its tokenizer and the folder they came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path

    @property
    def is_moe(self) -> bool:
        return is_moe(self.model.config)


def is_moe(config: PretrainedConfig) -> bool:
    return int(getattr(config, "num_experts", 0) or getattr(config, "num_local_experts", 0) or 0) > 1


def padded_vocab_size(tokenizer: PreTrainedTokenizerBase) -> int:
    return -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def policy_config(model: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The transformers config of the embedded policy described by the ``model`` section."""
    common: dict[str, Any] = dict(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=model.hidden_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads,
        num_key_value_heads=model.num_kv_heads,
        # Written out: older transformers (as pinned by vLLM releases) default Qwen3's head_dim to 128.
        head_dim=model.hidden_size // model.num_heads,
        max_position_embeddings=model.max_length,
        tie_word_embeddings=model.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    if model.architecture == "dense":
        return Qwen3Config(intermediate_size=model.mlp_size, **common)
    return Qwen3MoeConfig(
        num_experts=model.num_experts,
        num_experts_per_tok=model.experts_per_token,
        moe_intermediate_size=model.expert_size,
        intermediate_size=model.expert_size,  # unused while every layer is sparse; kept consistent
        norm_topk_prob=True,  # the routing weights of the chosen experts sum to one, as in Qwen3-30B-A3B
        router_aux_loss_coef=0.001,
        **common,
    )


def build_policy(model: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A freshly initialised embedded policy (deterministic for a given seed)."""
    config = policy_config(model, tokenizer)
    # Initialisation happens on the CPU; forking only its RNG leaves the caller's random state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy_class = Qwen3ForCausalLM if model.architecture == "dense" else Qwen3MoeForCausalLM
        policy = policy_class(config)
    policy.generation_config = generation_config(tokenizer)
    return policy.eval()


def generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Sampling defaults written next to the weights: vLLM and ``generate`` stop at the end of the assistant turn
    and sample the plain distribution (temperature 1, no top-k/top-p), as RL needs."""
    stops = stop_token_ids(tokenizer)
    return GenerationConfig(
        eos_token_id=stops if len(stops) > 1 else stops[0],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total parameters, and those a token actually uses (embedding + attention + its top-k experts)."""
    total = sum(p.numel() for p in model.parameters())
    config = model.config
    if not is_moe(config):
        return {"total": total, "active": total}
    experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    num_experts = int(getattr(config, "num_experts", 0) or getattr(config, "num_local_experts"))
    active = total - experts + experts * config.num_experts_per_tok // num_experts
    return {"total": total, "active": active}


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike[str]) -> Path:
    """Write config, safetensors weights, generation config, tokenizer files and chat template into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _no_hf_progress_bars():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    _add_legacy_config_keys(path / "config.json")
    _add_legacy_tokenizer_keys(path / "tokenizer_config.json", tokenizer)
    return path


def _add_legacy_config_keys(config_path: Path) -> None:
    """transformers 5 writes ``num_local_experts``, ``rope_parameters`` and ``dtype``; transformers 4 (which vLLM
    releases pin) reads ``num_experts``, ``rope_theta`` and ``torch_dtype`` and would silently fall back to its
    defaults (128 experts) without them. Both spellings are written; transformers 5 reads the folder unchanged."""
    config = json.loads(config_path.read_text())
    experts = config.get("num_local_experts")
    if experts is not None:
        config.setdefault("num_experts", experts)
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _add_legacy_tokenizer_keys(config_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """transformers 5 names the class ``TokenizersBackend`` and keeps the chat template in chat_template.jinja only;
    transformers 4 needs the class name it knows (``PreTrainedTokenizerFast``, an alias in 5) and reads the template
    from tokenizer_config.json. Only the embedded tokenizer is rewritten; a user's files are left as they are."""
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        config.setdefault("chat_template", template)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_policy(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    experts_implementation: str | None = None,
) -> Policy:
    """Load any causal-LM folder (the embedded policy, an SFT checkpoint or a user's checkpoint), offline.

    ``dtype`` None keeps the dtype the folder was saved in. ``experts_implementation`` picks the MoE kernel
    (transformers' choice when None; "eager" is the fastest for the tiny policy on CPU).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise PolicyError(f"{path}: not a Hugging Face model folder (no config.json)")
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype if dtype is not None else "auto"}
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise PolicyError(f"{path}/config.json: invalid JSON: {err.msg}") from None
    if experts_implementation is not None and int(config.get("num_experts") or config.get("num_local_experts") or 0) > 1:
        kwargs["experts_implementation"] = experts_implementation
    try:
        with _no_hf_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise PolicyError(f"{path}: cannot load the policy: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        # Batched generation and SFT need a pad id; eos is the usual stand-in for checkpoints that lack one.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return Policy(model.to(device).eval(), tokenizer, path)
