"""Bearer-token authentication: the metadata clients send and the server interceptor that checks it.

A call must carry exactly one ``authorization: Bearer <token>`` metadata entry. Health checking and reflection stay
open, so probes and tooling (grpc_health_probe, grpcurl's listing) work without the secret. The token is compared in
constant time. Over a network the token must travel inside TLS: on a plaintext channel anyone on the path can read it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Awaitable, Callable, Sequence

import grpc

from ring_async.errors import ConfigError
from ring_async.transport._handlers import service_of, with_behaviour

AUTHORIZATION = "authorization"
SCHEME = "bearer"

# Services every caller may use without a token.
OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)


def check_token(token: str) -> str:
    """``token``, if it can be sent as a bearer token; ConfigError otherwise (empty, spaces, non-ASCII)."""
    if not token:
        # An empty token would let in anyone who sends "Bearer ".
        raise ConfigError("auth token must not be empty")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ConfigError("auth token must be printable ASCII without spaces (it travels in a gRPC metadata value)")
    return token


def bearer_metadata(token: str) -> tuple[str, str]:
    """The metadata entry that authenticates a call."""
    return (AUTHORIZATION, f"Bearer {check_token(token)}")


def _digest(value: str) -> bytes:
    # Comparing fixed-length digests keeps even the token's length from leaking through timing.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without the right bearer token with UNAUTHENTICATED (except to :data:`OPEN_SERVICES`)."""

    def __init__(self, token: str):
        self._expected = _digest(check_token(token))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or service_of(handler_call_details.method) in OPEN_SERVICES:
            return handler
        problem = self._problem(handler_call_details.invocation_metadata or ())
        if problem is None:
            return handler

        async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        # The refusal keeps the method's arity (the server needs it to read the call) but never parses the request.
        return with_behaviour(handler, refuse, parse_requests=False)

    def _problem(self, metadata: Sequence[tuple[str, Any]]) -> str | None:
        """Why the call is not authenticated, or None when it is."""
        values = [value for key, value in metadata if key == AUTHORIZATION]
        if not values:
            return "missing bearer token: send metadata 'authorization: Bearer <token>'"
        if len(values) > 1:
            return "more than one 'authorization' metadata entry"
        scheme, _, token = str(values[0]).strip().partition(" ")
        if scheme.lower() != SCHEME or not token.strip():
            return "malformed 'authorization' metadata: expected 'Bearer <token>'"
        if not hmac.compare_digest(_digest(token.strip()), self._expected):
            return "invalid bearer token"
        return None
