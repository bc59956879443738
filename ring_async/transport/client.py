"""Opening channels to ring-async servers: bearer token attached, a deadline on every transfer, clear timeout errors.

Unary calls and client-streaming uploads (weights) that name no ``timeout=`` get ``default_timeout_s``; when a
deadline passes the call raises :class:`DeadlineExceeded`, which says which method on which server gave up after how
long. Calls with a response stream (``StreamRollouts``) are subscriptions meant to stay open, so they get no default
deadline: pass ``timeout=`` to bound one; the channel's keepalive still fails them if the peer vanishes.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ring_async.transport.auth import bearer_metadata
from ring_async.transport.limits import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT_S, channel_options
from ring_async.transport.tls import ClientTls


class DeadlineExceeded(grpc.aio.AioRpcError, TimeoutError):
    """A call outlived its deadline. Still an AioRpcError with code DEADLINE_EXCEEDED; its message names the call."""

    def __str__(self) -> str:
        return self.details() or "deadline exceeded"


class _CallPolicy:
    """What every call on a channel gets: the bearer token, a default deadline, and clear deadline errors."""

    def __init__(self, target: str, auth_token: str | None, default_timeout_s: float | None):
        self._target = target
        self._auth = bearer_metadata(auth_token) if auth_token is not None else None
        self.default_timeout_s = default_timeout_s

    def details(
        self, details: grpc.aio.ClientCallDetails, default_timeout_s: float | None
    ) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()))
        if self._auth is not None and self._auth[0] not in metadata:
            metadata.add(*self._auth)
        timeout = details.timeout if details.timeout is not None else default_timeout_s
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def finish(self, call: Any, details: grpc.aio.ClientCallDetails) -> Any:
        """Wait for a unary response, turning a passed deadline into a DeadlineExceeded that names the call."""
        try:
            await call
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            method = details.method.decode() if isinstance(details.method, bytes) else details.method
            message = f"{method} on {self._target}: no reply within {details.timeout:g} s (deadline exceeded)"
            if err.details() and err.details() != "Deadline Exceeded":
                message += f"; the server said: {err.details()}"
            raise DeadlineExceeded(
                err.code(), err.initial_metadata(), err.trailing_metadata(), message, err.debug_error_string()
            ) from None
        return call


# One interceptor object per call arity: grpc.aio files an interceptor under the first arity it implements only, so a
# single class implementing all four would silently skip streaming calls (no token, no deadline).


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, policy: _CallPolicy):
        self._policy = policy

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        details = self._policy.details(client_call_details, self._policy.default_timeout_s)
        return await self._policy.finish(await continuation(details, request), details)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, policy: _CallPolicy):
        self._policy = policy

    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterator[Any],
    ) -> Any:
        details = self._policy.details(client_call_details, self._policy.default_timeout_s)
        return await self._policy.finish(await continuation(details, request_iterator), details)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, policy: _CallPolicy):
        self._policy = policy

    async def intercept_unary_stream(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._policy.details(client_call_details, None), request)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, policy: _CallPolicy):
        self._policy = policy

    async def intercept_stream_stream(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterator[Any],
    ) -> Any:
        return await continuation(self._policy.details(client_call_details, None), request_iterator)


def open_channel(
    address: str,
    *,
    auth_token: str | None = None,
    tls: ClientTls | None = None,
    default_timeout_s: float | None = DEFAULT_TIMEOUT_S,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.aio.Channel:
    """A channel to ``address`` (``host:port``) for the generated stubs, e.g. ``broker_pb2_grpc.BrokerStub(channel)``.

    ``default_timeout_s=None`` removes the default deadline (then a call without ``timeout=`` can wait forever).
    Open it inside the event loop that will use it, and close it with ``await channel.close()``.
    """
    if default_timeout_s is not None and default_timeout_s <= 0:
        raise ValueError(f"default_timeout_s must be positive (or None), got {default_timeout_s}")
    options = channel_options(max_message_bytes)
    policy = _CallPolicy(address, auth_token, default_timeout_s)
    interceptors = [_UnaryUnary(policy), _UnaryStream(policy), _StreamUnary(policy), _StreamStream(policy)]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(address, tls.credentials(), options=options, interceptors=interceptors)


async def check_health(channel: grpc.aio.Channel, service: str = "", timeout_s: float = 5.0) -> str:
    """The health status of ``service`` ("" = the whole server): "SERVING", "NOT_SERVING", ...

    A service the server does not know raises AioRpcError NOT_FOUND.
    """
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
    )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
