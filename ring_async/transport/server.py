"""Starting a ring-async gRPC server: the services given, plus health checking and reflection, behind optional auth.

Every server answers the standard ``grpc.health.v1.Health`` service (overall status under "" and one status per
registered service) and server reflection (so ``grpcurl`` can list and call it without the .proto files).
"""

from __future__ import annotations

import ipaddress
import logging
from types import TracebackType
from typing import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ring_async.errors import RingAsyncError
from ring_async.transport.auth import BearerTokenInterceptor
from ring_async.transport.limits import DEFAULT_MAX_MESSAGE_BYTES, server_options
from ring_async.transport.services import spec_for
from ring_async.transport.status import ErrorStatus, ErrorStatusInterceptor
from ring_async.transport.tls import ServerTls

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class TransportError(RingAsyncError):
    """A server cannot start: its address cannot be bound (port in use, unknown host, no permission)."""


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (``[::1]:50051``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def split_host_port(address: str) -> tuple[str, int]:
    """The host (an IPv6 literal keeps its brackets) and the port of a ``host:port`` address."""
    host, _, port = address.rpartition(":")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Server:
    """A started server: where it listens, its per-service health, and a clean stop."""

    def __init__(
        self,
        server: grpc.aio.Server,
        host: str,
        port: int,
        services: Sequence[str],
        health_servicer: health.aio.HealthServicer,
    ):
        self.grpc_server = server
        self.host = host
        self.port = port
        self.services = tuple(services)
        self._health = health_servicer

    @property
    def address(self) -> str:
        """``host:port`` as bound (with a wildcard host such as 0.0.0.0, clients use a real address of the machine)."""
        return join_host_port(self.host, self.port)

    async def set_serving(self, service: str, serving: bool) -> None:
        """Report a registered service (or "" for the whole server) as SERVING or NOT_SERVING to health checks."""
        if service and service not in self.services:
            raise ValueError(f"{service!r} is not served here; services: {', '.join(self.services)}")
        await self._health.set(service, SERVING if serving else NOT_SERVING)

    async def stop(self, grace_s: float | None = 5.0) -> None:
        """Report NOT_SERVING, refuse new calls, and give calls in flight ``grace_s`` seconds to finish."""
        await self._health.enter_graceful_shutdown()
        await self.grpc_server.stop(grace_s)

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def start_server(
    servicers: Sequence[object],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    auth_token: str | None = None,
    tls: ServerTls | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    error_status: ErrorStatus | None = None,
    service_errors: ErrorStatus | None = None,
) -> Server:
    """Serve ``servicers`` (instances of the generated ``ring_async.v1`` servicer classes) on ``host:port``.

    ``port=0`` lets the system choose; the chosen one is ``Server.port``. With ``auth_token`` every call except
    health and reflection needs it as a bearer token. ``service_errors`` is the served role's own
    RingAsyncError -> status code table (its ``ERROR_STATUS``); ``error_status`` adds or overrides entries over it
    (see :mod:`ring_async.transport.status`). Must be awaited inside the event loop that will serve.
    """
    specs = [spec_for(servicer) for servicer in servicers]
    names = [spec.name for spec in specs]
    if not names:
        raise ValueError("start_server needs at least one servicer")
    if len(set(names)) != len(names):
        raise ValueError(f"a service is given twice: {names}")

    interceptors: list[grpc.aio.ServerInterceptor] = []
    if auth_token is not None:
        interceptors.append(BearerTokenInterceptor(auth_token))
    interceptors.append(ErrorStatusInterceptor({**(service_errors or {}), **(error_status or {})}))
    server = grpc.aio.server(interceptors=interceptors, options=server_options(max_message_bytes))

    for servicer, spec in zip(servicers, specs):
        spec.add_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    address = join_host_port(host, port)
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, tls.credentials())
    except RuntimeError as err:
        raise TransportError(f"cannot listen on {address}: {err}") from None
    _warn_if_exposed(host, auth_token, tls, names)

    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, SERVING)
    logger.info("serving %s on %s%s", ", ".join(names), join_host_port(host, bound), " (TLS)" if tls else "")
    return Server(server, host, bound, names, health_servicer)


def _warn_if_exposed(host: str, auth_token: str | None, tls: ServerTls | None, names: Sequence[str]) -> None:
    if _is_loopback(host):
        return
    if auth_token is None:
        logger.warning("%s listens on %s without authentication: anyone who can reach it can call it", names, host)
    elif tls is None:
        logger.warning("%s listens on %s with a bearer token but without TLS: the token travels in clear", names, host)
