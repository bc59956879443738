"""DeepSpeed in an ordinary process: the training device, and a process group when it runs as a single rank.

DeepSpeed expects a launcher to have started a process group and set LOCAL_RANK. SFT and tests run inside an
ordinary Python process, so this starts a one-rank group on an in-process store (gloo on CPU, nccl on CUDA): no
port, no environment variables that child processes would inherit. Under a real launcher (``deepspeed``,
``torchrun``: RANK and WORLD_SIZE are set) DeepSpeed's own initialisation runs as usual.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist

from ring_async.errors import ConfigError


def training_device(choice: str, key: str) -> torch.device:
    """The device a DeepSpeed engine trains on for a config's ``auto``/``cpu``/``cuda`` (``key`` names the setting)."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key} is 'cuda' but no CUDA device is available")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def ensure_process_group(backend: str) -> None:
    """Start a single-rank group unless one exists (it is kept for the life of the process)."""
    import deepspeed

    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if not dist.is_initialized() and not launched:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


@contextmanager
def local_rank_env() -> Iterator[None]:
    """DeepSpeed's engine reads LOCAL_RANK from the environment when it is built; a single in-process rank is local
    rank 0. Set only while the engine is constructed, so subprocesses never inherit it."""
    if "LOCAL_RANK" in os.environ:
        yield
        return
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        os.environ.pop("LOCAL_RANK", None)
