"""The Generator gRPC service (proto/ring_async/v1/generator.proto) over an engine and its generation loop.

- ``UpdateWeights``: the client streams ``WeightChunk`` s; each becomes a :class:`WeightBucket` checked as it
  arrives; the new version goes live between two decoding steps once every bucket is in. A refused update answers
  INVALID_ARGUMENT (FAILED_PRECONDITION for a version that is not newer) and the generator keeps its weights; one not
  complete within ``generation.weight_update_timeout_s`` answers DEADLINE_EXCEEDED.
- ``GetStatus``: version, pause state, in-flight work, counters and tokens/s over the last minute.
- ``Pause`` / ``Resume``: stop / restart leasing; leased groups are still generated and forwarded.

:func:`push_weights` is the client side of ``UpdateWeights`` (what a learner calls after each step).
"""

from __future__ import annotations

import time
from typing import AsyncIterator, Iterable, Mapping

import grpc
import torch

from ring_async.engines.generation.errors import (
    EngineUnavailableError,
    GenerationError,
    RequestError,
    StaleWeightVersionError,
    WeightUpdateError,
    WeightUpdateTimeout,
)
from ring_async.engines.generation.interface import GenerationEngine
from ring_async.engines.generation.loop import GenerationLoop, PauseInfo
from ring_async.engines.generation.weights import DEFAULT_BUCKET_BYTES, WeightBucket, iter_buckets
from ring_async.transport import Server, start_server
from ring_async.v1 import common_pb2, generator_pb2, generator_pb2_grpc

# Status codes of the generation errors (the transport maps any other RingAsyncError to FAILED_PRECONDITION).
ERROR_STATUS: Mapping[type, grpc.StatusCode] = {
    GenerationError: grpc.StatusCode.FAILED_PRECONDITION,
    RequestError: grpc.StatusCode.INVALID_ARGUMENT,
    WeightUpdateError: grpc.StatusCode.INVALID_ARGUMENT,
    StaleWeightVersionError: grpc.StatusCode.FAILED_PRECONDITION,
    WeightUpdateTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    EngineUnavailableError: grpc.StatusCode.UNAVAILABLE,
}


def chunk_to_bucket(chunk: generator_pb2.WeightChunk) -> WeightBucket:
    return WeightBucket(
        version=chunk.policy_version,
        index=chunk.bucket_index,
        count=chunk.bucket_count,
        payload=chunk.data,
        sha256=chunk.sha256,
        tensor_names=tuple(chunk.tensor_names),
        format=chunk.format,
    )


def bucket_to_chunk(bucket: WeightBucket) -> generator_pb2.WeightChunk:
    return generator_pb2.WeightChunk(
        policy_version=bucket.version,
        bucket_index=bucket.index,
        bucket_count=bucket.count,
        tensor_names=list(bucket.tensor_names),
        format=bucket.format,
        data=bucket.payload,
        sha256=bucket.sha256,
    )


class GeneratorService(generator_pb2_grpc.GeneratorServicer):
    def __init__(
        self,
        engine: GenerationEngine,
        loop: GenerationLoop | None = None,
        *,
        generator_id: str = "generator-0",
        weight_update_timeout_s: float = 60.0,
    ):
        self.engine = engine
        self.loop = loop
        self.generator_id = loop.generator_id if loop is not None else generator_id
        self.weight_update_timeout_s = weight_update_timeout_s
        self._pause = PauseInfo(False, "", 0.0)  # used when no loop is attached (an engine serving weights only)

    async def UpdateWeights(
        self, request_iterator: AsyncIterator[generator_pb2.WeightChunk], context: grpc.aio.ServicerContext
    ) -> generator_pb2.UpdateWeightsReply:
        async def buckets() -> AsyncIterator[WeightBucket]:
            async for chunk in request_iterator:
                yield chunk_to_bucket(chunk)

        report = await self.engine.update_weights(buckets(), timeout_s=self.weight_update_timeout_s)
        if self.loop is not None:  # now, not at the loop's next turn: the slots of stale samples free at once
            self.loop.abort_stale()
        return generator_pb2.UpdateWeightsReply(
            policy_version=report.version,
            buckets=report.buckets,
            tensors=report.tensors,
            bytes=report.bytes,
            load_s=report.load_s,
        )

    async def GetStatus(
        self, request: common_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.GeneratorStatus:
        stats = self.engine.stats()
        return generator_pb2.GeneratorStatus(
            generator_id=self.generator_id,
            engine=stats.engine,
            policy_version=stats.policy_version,
            pause=self._pause_state(),
            inflight_groups=self.loop.inflight_groups if self.loop is not None else 0,
            inflight_samples=stats.running + stats.waiting,
            rollouts_generated=stats.completed_samples,
            tokens_generated=stats.generated_tokens,
            tokens_per_s=stats.tokens_per_s,
            weight_updates=stats.weight_updates,
            weight_updates_refused=stats.refused_weight_updates,
        )

    async def Pause(self, request: common_pb2.PauseRequest, context: grpc.aio.ServicerContext) -> common_pb2.PauseState:
        if self.loop is not None:
            self.loop.pause(request.reason)
        elif not self._pause.paused:
            self._pause = PauseInfo(True, request.reason, time.time())
        return self._pause_state()

    async def Resume(
        self, request: common_pb2.ResumeRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.PauseState:
        if self.loop is not None:
            self.loop.resume()
        self._pause = PauseInfo(False, "", 0.0)
        return self._pause_state()

    def _pause_state(self) -> common_pb2.PauseState:
        info = self.loop.status().pause if self.loop is not None else self._pause
        return common_pb2.PauseState(paused=info.paused, reason=info.reason, paused_at_unix_s=info.paused_at_unix_s)


async def serve_generator(service: GeneratorService, **server_kwargs) -> Server:
    """Start a gRPC server for ``service`` (health, reflection, auth as in :func:`ring_async.transport.start_server`)
    with the generation errors mapped to their status codes."""
    return await start_server([service], service_errors=ERROR_STATUS, **server_kwargs)


async def push_weights(
    stub: generator_pb2_grpc.GeneratorStub,
    source: torch.nn.Module | Mapping[str, torch.Tensor] | Iterable[WeightBucket],
    version: int | None = None,
    *,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    timeout_s: float | None = None,
) -> generator_pb2.UpdateWeightsReply:
    """Send weights (a module, a state dict, or ready buckets) as ``version`` to a generator over UpdateWeights."""
    if isinstance(source, (torch.nn.Module, Mapping)):
        if version is None:
            raise WeightUpdateError("push_weights needs the version of the weights it sends")
        buckets: Iterable[WeightBucket] = iter_buckets(source, version, bucket_bytes)
    else:
        buckets = source

    async def chunks() -> AsyncIterator[generator_pb2.WeightChunk]:
        for bucket in buckets:
            yield bucket_to_chunk(bucket)

    return await stub.UpdateWeights(chunks(), timeout=timeout_s)
