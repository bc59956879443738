"""The gRPC base every ring-async service uses: servers with health, reflection, auth and typed errors; channels
with the bearer token, message limits and a deadline on every transfer.

Server side::

    server = await start_server([MyLearner()], host="0.0.0.0", port=50051, auth_token=token)
    ...
    await server.stop()

Client side::

    channel = open_channel(server.address, auth_token=token)
    status = await learner_pb2_grpc.LearnerStub(channel).GetStatus(common_pb2.StatusRequest())

See docs/protocols.md for the contracts and conventions.
"""

from ring_async.transport.arrow import pack_batch, unpack_batch
from ring_async.transport.auth import AUTHORIZATION, OPEN_SERVICES, BearerTokenInterceptor, bearer_metadata
from ring_async.transport.client import DeadlineExceeded, check_health, open_channel
from ring_async.transport.limits import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT_S, channel_options, server_options
from ring_async.transport.server import Server, TransportError, join_host_port, split_host_port, start_server
from ring_async.transport.services import SERVICES, ServiceSpec, spec_for
from ring_async.transport.status import DEFAULT_ERROR_STATUS, ErrorStatusInterceptor, status_for
from ring_async.transport.tls import ClientTls, ServerTls

__all__ = [
    "AUTHORIZATION",
    "DEFAULT_ERROR_STATUS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "OPEN_SERVICES",
    "SERVICES",
    "BearerTokenInterceptor",
    "ClientTls",
    "DeadlineExceeded",
    "ErrorStatusInterceptor",
    "Server",
    "ServerTls",
    "ServiceSpec",
    "TransportError",
    "bearer_metadata",
    "channel_options",
    "check_health",
    "join_host_port",
    "split_host_port",
    "open_channel",
    "pack_batch",
    "server_options",
    "spec_for",
    "start_server",
    "status_for",
    "unpack_batch",
]
