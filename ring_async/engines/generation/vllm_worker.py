"""The worker side of weight updates for vLLM: a worker extension (``worker_extension_cls``) mixed into every vLLM
GPU worker, reached through ``collective_rpc``.

Updates are staged, then committed: ``ring_async_stage_bucket`` (safetensors bytes, already checked by the engine
process) and ``ring_async_receive_broadcast`` (tensors broadcast over NCCL from the learner) only fill a staging
dict; ``ring_async_commit`` hands the staged tensors to the model's own ``load_weights`` (which maps checkpoint names
onto vLLM's fused parameters). vLLM runs utility calls between engine steps, so the commit is atomic with respect to
decoding: no step sees half an update. ``ring_async_discard`` drops a refused or timed-out update.

This module imports vLLM only inside the methods: it must be importable (by its qualified name) without vLLM.
"""

from __future__ import annotations

from typing import Any

import torch

EXTENSION = "ring_async.engines.generation.vllm_worker.RingAsyncWorkerExtension"


class RingAsyncWorkerExtension:
    """Methods added to vLLM's worker (``self`` is the worker: ``self.model_runner``, ``self.device``)."""

    def _ring_async_staging(self, version: int) -> dict[str, torch.Tensor]:
        state = self.__dict__.setdefault("_ring_async_state", {"version": None, "staged": {}})
        if state["version"] != version:
            state["version"], state["staged"] = version, {}
        return state["staged"]

    def ring_async_stage_bucket(self, version: int, payload: bytes) -> int:
        """Stage the tensors of one safetensors bucket (kept on the CPU until the commit)."""
        from safetensors.torch import load

        tensors = load(payload)
        self._ring_async_staging(version).update(tensors)
        return len(tensors)

    def ring_async_init_weight_group(self, host: str, port: int, rank_offset: int, world_size: int) -> None:
        """Join the NCCL group the learner broadcasts weights in (the learner is rank 0)."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.parallel_state import get_world_group
        from vllm.distributed.utils import StatelessProcessGroup

        rank = get_world_group().rank + rank_offset
        group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
        self._ring_async_nccl = PyNcclCommunicator(group, device=self.device)

    def ring_async_receive_broadcast(self, version: int, specs: list[tuple[str, str, list[int]]]) -> int:
        """Receive tensors ``(name, dtype, shape)``, in this order, broadcast from rank 0; stage them on the GPU."""
        communicator = getattr(self, "_ring_async_nccl", None)
        if communicator is None:
            raise RuntimeError("ring_async_init_weight_group was not called on this worker")
        staged = self._ring_async_staging(version)
        stream = torch.cuda.current_stream()
        for name, dtype, shape in specs:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            communicator.broadcast(tensor, src=0, stream=stream)
            staged[name] = tensor
        torch.cuda.synchronize()
        return len(specs)

    def ring_async_commit(self, version: int) -> int:
        """Load the staged tensors of ``version`` into the model in one call; returns how many were loaded."""
        state = self.__dict__.get("_ring_async_state") or {}
        if state.get("version") != version or not state.get("staged"):
            raise RuntimeError(f"no staged weights for version {version}")
        staged: dict[str, Any] = state["staged"]
        self.model_runner.model.load_weights(weights=list(staged.items()))
        torch.cuda.synchronize()
        state["version"], state["staged"] = None, {}
        return len(staged)

    def ring_async_discard(self) -> None:
        self.__dict__["_ring_async_state"] = {"version": None, "staged": {}}


def open_weight_broadcast(host: str, port: int, world_size: int, device: torch.device | str):
    """The learner's end of the NCCL weight group (rank 0): a communicator whose ``broadcast(tensor, src=0, stream)``
    sends each tensor, in the order of the specs given to :meth:`VllmEngine.update_weights_broadcast`."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=0, world_size=world_size)
    return PyNcclCommunicator(group, device=device)
