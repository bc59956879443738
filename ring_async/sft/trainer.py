"""Distillation SFT with DeepSpeed: the policy learns the teacher's responses, loss on response tokens only.

One process, one rank (DeepSpeed's engine on CPU with gloo, or on one GPU); the engine owns the optimizer (AdamW),
the warm-up + cosine schedule, gradient clipping and bf16 on CUDA. Checkpoints are ordinary policy folders (the same
format as the initial policy, loadable by ``from_pretrained`` and vLLM), written every epoch or every N steps, each
with an ``sft_state.json`` that records how far training had got; checkpoint selection reads them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ring_async.config import SftConfig
from ring_async.errors import RingAsyncError
from ring_async.policy.model import is_moe, load_policy, save_policy
from ring_async.sft.data import collate, encode_examples, iterate_steps, steps_per_epoch
from ring_async.sft.distributed import ensure_process_group, local_rank_env, training_device
from ring_async.tasks.record import TaskRecord

log = logging.getLogger(__name__)

STATE_FILE = "sft_state.json"
SUMMARY_FILE = "sft_summary.json"
LOG_FILE = "sft_log.jsonl"
CHECKPOINTS_DIR = "checkpoints"


class SftError(RingAsyncError):
    """SFT cannot run on the given data or checkpoint (no teacher responses, nothing fits max length, ...)."""


@dataclass(frozen=True)
class SftCheckpoint:
    path: Path
    step: int
    epoch: float  # epochs completed when it was written (fractional between epoch ends)
    sft_tokens: int  # response tokens trained on up to this checkpoint
    loss: float  # mean response-token loss over the steps since the previous checkpoint

    @classmethod
    def read(cls, path: Path) -> "SftCheckpoint":
        state = json.loads((path / STATE_FILE).read_text())
        return cls(path, int(state["step"]), float(state["epoch"]), int(state["sft_tokens"]), float(state["loss"]))


@dataclass
class SftResult:
    out_dir: Path
    checkpoints: list[SftCheckpoint]
    steps: int
    wall_s: float
    tokens_per_s: float  # prompt + response tokens (not padding) through forward and backward, per second
    response_tokens: int
    skipped_too_long: int
    losses: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        # Relative paths: the run folder may be moved (the cache builds it elsewhere and renames it into place).
        out["checkpoints"] = [dict(asdict(c), path=str(c.path.relative_to(self.out_dir))) for c in self.checkpoints]
        return out


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[SftCheckpoint]:
    """The checkpoints of an SFT run, in step order (a folder of checkpoints, or the run folder holding one)."""
    root = Path(out_dir)
    base = root / CHECKPOINTS_DIR if (root / CHECKPOINTS_DIR).is_dir() else root
    found = [SftCheckpoint.read(p) for p in sorted(base.iterdir()) if (p / STATE_FILE).is_file()] if base.is_dir() else []
    return sorted(found, key=lambda c: c.step)


def _deepspeed_config(sft: SftConfig, device: torch.device, total_steps: int) -> dict:
    on_cuda = device.type == "cuda"
    return {
        "train_micro_batch_size_per_gpu": sft.batch_size,
        "gradient_accumulation_steps": sft.grad_accum,
        "gradient_clipping": sft.grad_clip,
        "optimizer": {
            "type": "AdamW",
            # DeepSpeed's fused Adam needs CUDA; on the CPU torch's AdamW does the same update.
            "params": {"lr": sft.lr, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": sft.weight_decay,
                       "torch_adam": not on_cuda},
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {"total_num_steps": max(total_steps, 1), "warmup_num_steps": min(sft.warmup_steps, total_steps),
                       "warmup_min_ratio": 0.0, "cos_min_ratio": sft.min_lr_ratio},
        },
        "bf16": {"enabled": on_cuda and sft.bf16},
        "zero_optimization": {"stage": 0},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def run_sft(
    policy_path: str | os.PathLike[str],
    records: Sequence[TaskRecord],
    out_dir: str | os.PathLike[str],
    sft: SftConfig,
    seed: int = 0,
    max_length: int | None = None,
    progress: bool = True,
) -> SftResult:
    """Fine-tune the policy at ``policy_path`` on the records' teacher responses; checkpoints go to
    ``out_dir/checkpoints/step-NNNNNN``. ``max_length`` (prompt + response tokens) defaults to the model's."""
    import deepspeed

    out_dir = Path(out_dir)
    device = training_device(sft.device, "sft.device")
    policy = load_policy(policy_path, experts_implementation="eager" if device.type == "cpu" else None)
    model, tokenizer = policy.model, policy.tokenizer
    limit = max_length or int(getattr(model.config, "max_position_embeddings", 2048))
    examples, too_long = encode_examples(tokenizer, records, limit)
    if too_long:
        log.warning("skipped %d SFT examples longer than %d tokens", too_long, limit)
    if not examples:
        raise SftError(f"no SFT examples: none of the {len(records)} tasks has a teacher 'response' within {limit} tokens")
    per_epoch = steps_per_epoch(len(examples), sft.batch_size, sft.grad_accum)
    if per_epoch == 0:
        raise SftError(f"{len(examples)} examples do not fill one step of {sft.batch_size} x {sft.grad_accum}")
    total_steps = per_epoch * sft.epochs if sft.max_steps is None else min(sft.max_steps, per_epoch * sft.epochs)
    save_every = sft.save_every_steps or per_epoch

    torch.manual_seed(seed)
    ensure_process_group("nccl" if device.type == "cuda" else "gloo")
    model.train()
    with local_rank_env():
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=_deepspeed_config(sft, device, total_steps),
        )
    moe = is_moe(model.config)
    aux_coef = float(getattr(model.config, "router_aux_loss_coef", 0.0)) if moe else 0.0
    (out_dir / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
    log_handle = (out_dir / LOG_FILE).open("w", buffering=1)  # line-buffered: `tail -f` follows the run

    checkpoints: list[SftCheckpoint] = []
    losses: list[float] = []
    window_loss, window_steps = 0.0, 0
    seen_tokens = response_tokens = 0
    step = 0
    started = time.monotonic()
    bar = tqdm(total=total_steps, desc="sft", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        for epoch, micro_batches in iterate_steps(examples, sft.batch_size, sft.grad_accum, sft.epochs, seed):
            step_loss = 0.0
            for batch in micro_batches:
                tensors = {k: v.to(engine.device) for k, v in collate(batch, tokenizer.pad_token_id).items()}
                extra = {"output_router_logits": True} if moe else {}
                out = engine(**tensors, **extra)
                engine.backward(out.loss)
                engine.step()
                # The model's loss includes the MoE load-balance term; report the language-model part.
                aux = float(out.aux_loss.detach()) * aux_coef if moe and getattr(out, "aux_loss", None) is not None else 0.0
                step_loss += (float(out.loss.detach()) - aux) / len(micro_batches)
                seen_tokens += sum(len(e.input_ids) for e in batch)
                response_tokens += sum(e.response_tokens for e in batch)
            step += 1
            losses.append(step_loss)
            window_loss += step_loss
            window_steps += 1
            elapsed = time.monotonic() - started
            rate = seen_tokens / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{step_loss:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
            log_handle.write(json.dumps({"step": step, "epoch": epoch, "loss": step_loss,
                                         "lr": engine.get_lr()[0], "tokens_per_s": rate}) + "\n")
            if step % save_every == 0 or step == total_steps:
                checkpoints.append(_save_checkpoint(
                    engine.module, tokenizer, out_dir, step, step / per_epoch, response_tokens,
                    window_loss / max(window_steps, 1), seed))
                window_loss, window_steps = 0.0, 0
            if step >= total_steps:
                break
    finally:
        bar.close()
        log_handle.close()
    wall = time.monotonic() - started
    result = SftResult(out_dir, checkpoints, step, wall, seen_tokens / max(wall, 1e-9), response_tokens, too_long,
                       losses)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(result.summary(), indent=2))
    return result


def _save_checkpoint(model, tokenizer, out_dir: Path, step: int, epoch: float, sft_tokens: int, loss: float,
                     seed: int) -> SftCheckpoint:
    path = out_dir / CHECKPOINTS_DIR / f"step-{step:06d}"
    was_training = model.training
    save_policy(model, tokenizer, path)
    model.train(was_training)
    state = {"step": step, "epoch": round(epoch, 4), "sft_tokens": sft_tokens, "loss": loss, "seed": seed}
    (path / STATE_FILE).write_text(json.dumps(state, indent=2))
    return SftCheckpoint(path, step, round(epoch, 4), sft_tokens, loss)
