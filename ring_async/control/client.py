"""A small asyncio client for the Control service (docs/control.md).

    async with ControlClient("control.example:50051", token) as control:
        ids = await control.submit_prompts([{"text": "What is 6*7?", "reward_type": "math", "answer": "42"}])
        status = await control.status()

An external reward model::

    async with ControlClient(address, token) as control:
        async for batch in control.stream_rollouts(pending_external_only=True):   # pyarrow RecordBatches
            ids = batch.column("rollout_id").to_pylist()
            await control.submit_rewards({i: score(i) for i in ids})   # None: could not score it (masked)

Every method raises ``grpc.aio.AioRpcError`` (with the server's status code and message) when the call is refused,
e.g. UNAUTHENTICATED for a wrong token or INVALID_ARGUMENT naming the bad prompt. Unary calls have a deadline (the
channel's ``default_timeout_s``, or ``timeout=``); a rollout stream has none unless given one.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import grpc
import msgpack
import pyarrow as pa

from ring_async.data.schemas import ROLLOUT
from ring_async.transport import DEFAULT_TIMEOUT_S, ClientTls, open_channel, unpack_batch
from ring_async.v1 import common_pb2, control_pb2, control_pb2_grpc, verifier_pb2

PromptLike = control_pb2.Prompt | Mapping[str, Any]


def to_prompt(prompt: PromptLike) -> control_pb2.Prompt:
    """A Prompt message from a message or a mapping of its fields. In a mapping, ``tests`` may be the tests object
    (sent as JSON text) and ``metadata`` a map (sent as msgpack)."""
    if isinstance(prompt, control_pb2.Prompt):
        return prompt
    fields = dict(prompt)
    if isinstance(fields.get("tests"), Mapping):
        fields["tests"] = json.dumps(fields["tests"])
    if isinstance(fields.get("metadata"), Mapping):
        fields["metadata"] = msgpack.packb(fields["metadata"], use_bin_type=True)
    return control_pb2.Prompt(**fields)


class RolloutStream:
    """The rollouts of one StreamRollouts call: an async iterator of ``rollout/v1`` record batches.

    ``skipped`` counts the rollouts the server skipped so far because this client read too slowly (always 0 with
    ``pending_external_only``). :meth:`cancel` ends the stream; so does leaving an ``async for`` over it early."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self.skipped = 0

    def __aiter__(self) -> "RolloutStream":
        return self

    async def __anext__(self) -> pa.RecordBatch:
        reply = await self._call.read()
        if reply is grpc.aio.EOF:
            raise StopAsyncIteration
        self.skipped += reply.skipped
        return unpack_batch(reply.rollouts, ROLLOUT)

    def cancel(self) -> None:
        self._call.cancel()


class ControlClient:
    """Control over one channel to ``address`` (``host:port``), authenticated with ``token``.

    Open it inside the event loop that uses it; close it with :meth:`close` or ``async with``."""

    def __init__(self, address: str, token: str, *, tls: ClientTls | None = None,
                 default_timeout_s: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.channel = open_channel(address, auth_token=token, tls=tls, default_timeout_s=default_timeout_s)
        self._stub = control_pb2_grpc.ControlStub(self.channel)

    async def __aenter__(self) -> "ControlClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def submit_prompts(self, prompts: Iterable[PromptLike], *, timeout: float | None = None) -> list[str]:
        """Queue ``prompts`` (all or none); their ids, in order (the caller's where given, else assigned)."""
        request = control_pb2.SubmitPromptsRequest(prompts=[to_prompt(p) for p in prompts])
        reply = await self._stub.SubmitPrompts(request, timeout=timeout)
        return list(reply.prompt_ids)

    async def submit_rewards(self, rewards: Mapping[str, float | None], *,
                             timeout: float | None = None) -> verifier_pb2.SubmitRewardsReply:
        """Rewards by rollout id; ``None`` marks a rollout the reward model could not score (masked from training,
        not scored 0). The reply counts accepted, already rewarded and unknown ids; resending is safe."""
        entries = [verifier_pb2.Reward(rollout_id=rollout_id, reward=0.0 if reward is None else reward,
                                       unverifiable=reward is None) for rollout_id, reward in rewards.items()]
        return await self._stub.SubmitRewards(verifier_pb2.SubmitRewardsRequest(rewards=entries), timeout=timeout)

    def stream_rollouts(self, reward_types: Iterable[str] = (), *, pending_external_only: bool = False,
                        timeout: float | None = None) -> RolloutStream:
        """Rollouts as they are verified (or, with ``pending_external_only``, every rollout waiting for a reward,
        then new ones as they start waiting), optionally only of some reward types."""
        request = verifier_pb2.StreamRolloutsRequest(reward_types=list(reward_types),
                                                     pending_external_only=pending_external_only)
        return RolloutStream(self._stub.StreamRollouts(request, timeout=timeout))

    async def status(self, *, timeout: float | None = None) -> control_pb2.SystemStatus:
        return await self._stub.GetStatus(common_pb2.StatusRequest(), timeout=timeout)

    async def pause(self, reason: str = "", *, timeout: float | None = None) -> common_pb2.PauseState:
        return await self._stub.Pause(common_pb2.PauseRequest(reason=reason), timeout=timeout)

    async def resume(self, *, timeout: float | None = None) -> common_pb2.PauseState:
        return await self._stub.Resume(common_pb2.ResumeRequest(), timeout=timeout)

    async def checkpoint(self, tag: str = "", *, timeout: float | None = None) -> common_pb2.CheckpointReply:
        """Checkpoint the learner; answers once the checkpoint is on disk (its path is on the learner's machine)."""
        return await self._stub.Checkpoint(common_pb2.CheckpointRequest(tag=tag), timeout=timeout)
