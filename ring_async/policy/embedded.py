"""The policy a run starts from: a user's checkpoint (``model.path``) or the embedded tiny policy, built once per
configuration and kept in the artifact cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ring_async.cache import ArtifactCache, file_fingerprint
from ring_async.config import RingConfig
from ring_async.policy.errors import PolicyError
from ring_async.policy.model import build_policy, save_policy
from ring_async.policy.tokenizer import build_tokenizer

# Bump when the tokenizer corpus, the tokenizer's construction or the model builder changes what they produce.
POLICY_FORMAT = 1


def policy_material(config: RingConfig) -> dict[str, Any]:
    """What determines the initial policy: the cache key of the embedded one, or the identity of a user's folder."""
    if config.model.path:
        folder = Path(config.model.path)
        files = sorted(p for p in folder.glob("*") if p.suffix in {".json", ".safetensors", ".bin", ".model"})
        return {"user_checkpoint": str(folder.resolve()), "files": [file_fingerprint(p) for p in files]}
    return {"format": POLICY_FORMAT, "model": config.model.model_dump(mode="json"), "seed": config.run.seed}


def build_embedded_policy(config: RingConfig, out_dir: Path) -> Path:
    tokenizer = build_tokenizer(config.model.vocab_size, model_max_length=config.model.max_length)
    model = build_policy(config.model, tokenizer, seed=config.run.seed)
    return save_policy(model, tokenizer, out_dir)


def initial_policy_path(config: RingConfig, cache: ArtifactCache | None = None) -> Path:
    """The folder of the policy SFT starts from; builds (or fetches from the cache) the embedded one."""
    if config.model.path:
        path = Path(config.model.path)
        if not (path / "config.json").is_file():
            raise PolicyError(f"model.path {path}: not a Hugging Face model folder (no config.json)")
        return path
    cache = cache or ArtifactCache(config.cache)
    return cache.get_or_build("policy", policy_material(config), lambda out: build_embedded_policy(config, out))
