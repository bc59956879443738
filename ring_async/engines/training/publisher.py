"""Publishing a new policy version to every generator: bucketed safetensors over Generator.UpdateWeights (CPU path).

The buckets of a version are built once and streamed to all generators concurrently, each push under the publish
timeout. A generator that refuses or misses an update keeps serving its old version (the update is atomic on its
side), so a failed push is reported, not retried blindly: its rollouts carry the old version and the broker's
staleness bound decides whether they still train. The next version goes to it as usual.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import grpc
import torch

from ring_async.engines.generation.service import push_weights
from ring_async.engines.generation.weights import DEFAULT_BUCKET_BYTES, iter_buckets
from ring_async.engines.training.errors import PublishError
from ring_async.v1 import generator_pb2_grpc


@dataclass
class PublishReport:
    version: int
    buckets: int
    bytes: int
    wall_s: float
    generators: list[str] = field(default_factory=list)  # the ones that loaded the version
    failed: dict[str, str] = field(default_factory=dict)  # generator -> why not


class WeightPublisher:
    """Pushes versions to the generators behind ``channels`` (name -> channel, opened by the caller)."""

    def __init__(self, channels: Mapping[str, grpc.aio.Channel], *, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 timeout_s: float = 60.0, initial_version: int = 0):
        self._stubs = {name: generator_pb2_grpc.GeneratorStub(ch) for name, ch in channels.items()}
        self.bucket_bytes = bucket_bytes
        self.timeout_s = timeout_s
        # generator -> the last version it confirmed loading; they start with ``initial_version`` (the policy the
        # run started from is version 0).
        self.loaded: dict[str, int] = {name: initial_version for name in self._stubs}

    def lagging(self, version: int) -> list[str]:
        """The generators that have not confirmed ``version`` (a push failed, or they were restarted)."""
        return [n for n in self._stubs if self.loaded.get(n, -1) < version]

    def set_target(self, name: str, channel: grpc.aio.Channel) -> None:
        """Publish to generator ``name`` over ``channel`` from now on (a new generator, or one that moved)."""
        self._stubs[name] = generator_pb2_grpc.GeneratorStub(channel)
        self.loaded.pop(name, None)

    async def publish(self, weights: Mapping[str, torch.Tensor], version: int, *, strict: bool = False,
                      only: Sequence[str] | None = None) -> PublishReport:
        """Send ``weights`` as ``version`` to every generator (or those in ``only``). ``strict``: raise PublishError
        if any push failed."""
        started = time.perf_counter()
        buckets = list(iter_buckets(weights, version, self.bucket_bytes))
        names = list(self._stubs) if only is None else [n for n in only if n in self._stubs]
        replies = await asyncio.gather(
            *(push_weights(self._stubs[n], buckets, timeout_s=self.timeout_s) for n in names), return_exceptions=True)
        report = PublishReport(version, len(buckets), sum(len(b.payload) for b in buckets), 0.0)
        for name, reply in zip(names, replies):
            if isinstance(reply, BaseException):
                detail = reply.details() if isinstance(reply, grpc.aio.AioRpcError) else str(reply)
                report.failed[name] = detail or type(reply).__name__
            else:
                report.generators.append(name)
                self.loaded[name] = version
        report.wall_s = time.perf_counter() - started
        if strict and report.failed:
            raise PublishError(f"policy version {version} did not reach {', '.join(report.failed)}: "
                               + "; ".join(f"{n}: {why}" for n, why in report.failed.items()))
        return report
