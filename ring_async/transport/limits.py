"""Channel and server options shared by every ring-async endpoint: message size limits, keepalive, port binding."""

from __future__ import annotations

# Arrow batches of rollouts and train batches, and weight buckets, are single messages: gRPC's 4 MiB default would
# refuse a modest train batch. 256 MiB holds a step of ~400k tokens with logprobs many times over.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# Deadline given to unary calls and client-streaming uploads that name none: long enough for a 256 MiB transfer on a
# slow link, short enough that a dead peer surfaces as an error instead of a hang.
DEFAULT_TIMEOUT_S = 120.0

# Both sides ping while calls are open, so a peer that vanished without closing its TCP connection (a killed pod, a
# dropped NAT entry) fails the call within about a minute and a half instead of leaving it hanging forever.
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000

Options = list[tuple[str, int | str]]


def _check_size(max_message_bytes: int) -> int:
    if not 0 < max_message_bytes < 2**31:
        # gRPC reads channel arguments as 32-bit ints.
        raise ValueError(f"max_message_bytes must be in [1, 2**31), got {max_message_bytes}")
    return max_message_bytes


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Options:
    size = _check_size(max_message_bytes)
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        # gRPC sets SO_REUSEPORT by default: a second server on a fixed port would then bind successfully and silently
        # steal half the connections. Binding must fail instead.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Accept the clients' keepalive pings (the default minimum of 5 minutes would answer them with GOAWAY).
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ]


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Options:
    size = _check_size(max_message_bytes)
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Keep probing a long-lived stream (StreamRollouts) that is quiet for a while; the default stops after two.
        ("grpc.http2.max_pings_without_data", 0),
        # Peers restart (an actor Ray brought back on its old port): reconnect within seconds, not gRPC's default
        # of up to two minutes, and keep each channel's connection state its own, so a fresh channel to a peer that
        # is back does not inherit another channel's back-off from while it was down.
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5000),
        ("grpc.use_local_subchannel_pool", 1),
    ]
