"""Swapping the behaviour of a gRPC method handler while keeping its arity and (de)serializers."""

from __future__ import annotations

from typing import Any, Callable

import grpc

# (request streaming, response streaming) -> the handler attribute holding the behaviour, and the factory for it.
_KINDS: dict[tuple[bool, bool], tuple[str, Callable[..., grpc.RpcMethodHandler]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def behaviour(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    attribute, _ = _KINDS[(handler.request_streaming, handler.response_streaming)]
    return getattr(handler, attribute)


def with_behaviour(
    handler: grpc.RpcMethodHandler, function: Callable[..., Any], *, parse_requests: bool = True
) -> grpc.RpcMethodHandler:
    """A handler of the same arity running ``function``; ``parse_requests=False`` hands it the raw request bytes."""
    _, factory = _KINDS[(handler.request_streaming, handler.response_streaming)]
    return factory(
        function,
        request_deserializer=handler.request_deserializer if parse_requests else None,
        response_serializer=handler.response_serializer,
    )


def service_of(method: str) -> str:
    """``ring_async.v1.Broker`` from the method path ``/ring_async.v1.Broker/LeasePrompts``."""
    return method.lstrip("/").split("/", 1)[0]
