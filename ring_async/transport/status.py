"""Typed ring-async errors raised in a handler become gRPC status codes carrying the error's message.

Handlers raise :class:`~ring_async.errors.RingAsyncError` subclasses like any other code; the server interceptor
turns them into a status the client can act on, instead of UNKNOWN with a Python traceback summary. The error's class
(the most specific one with an entry, along its MRO) picks the code.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import grpc

from ring_async.errors import BrokerError, ConfigError, PayloadError, RingAsyncError
from ring_async.transport._handlers import behaviour, with_behaviour

logger = logging.getLogger(__name__)

ErrorStatus = Mapping[type[RingAsyncError], grpc.StatusCode]

DEFAULT_ERROR_STATUS: ErrorStatus = {
    # The request itself is wrong, whatever the server's state: resending it unchanged cannot succeed.
    PayloadError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    # The request conflicts with the broker's state (unknown group, step already acknowledged, ...).
    BrokerError: grpc.StatusCode.FAILED_PRECONDITION,
    RingAsyncError: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_for(error: RingAsyncError, overrides: ErrorStatus | None = None) -> grpc.StatusCode:
    """The status code of ``error``: ``overrides``, then :data:`DEFAULT_ERROR_STATUS`; the most specific class wins."""
    table = {**DEFAULT_ERROR_STATUS, **(overrides or {})}
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    raise TypeError(f"not a RingAsyncError: {type(error).__qualname__}")


class ErrorStatusInterceptor(grpc.aio.ServerInterceptor):
    """Aborts a call with :func:`status_for` and the message when its async handler raises a RingAsyncError."""

    def __init__(self, overrides: ErrorStatus | None = None):
        self._overrides = dict(overrides or {})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        function = behaviour(handler)
        method = handler_call_details.method
        if inspect.isasyncgenfunction(function):
            return with_behaviour(handler, self._streaming(function, method))
        if inspect.iscoroutinefunction(function):
            return with_behaviour(handler, self._unary(function, method))
        # Plain functions (the generated UNIMPLEMENTED defaults) set their status themselves.
        return handler

    async def _abort(self, context: grpc.aio.ServicerContext, method: str, error: RingAsyncError) -> None:
        code = status_for(error, self._overrides)
        message = str(error) or type(error).__name__
        logger.info("%s refused with %s: %s", method, code.name, message)
        await context.abort(code, message)

    def _unary(self, function: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await function(request, context)
            except RingAsyncError as error:
                await self._abort(context, method, error)

        return call

    def _streaming(self, function: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in function(request, context):
                    yield response
            except RingAsyncError as error:
                await self._abort(context, method, error)

        return call
