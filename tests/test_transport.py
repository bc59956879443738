"""The shared gRPC base, against real servers on 127.0.0.1: health, reflection, auth, typed errors, deadlines, TLS."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import time
from typing import AsyncIterator

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ring_async.broker.journal import JournalError
from ring_async.data import codec
from ring_async.data.schemas import PROMPT_GROUP, ROLLOUT
from ring_async.errors import BrokerError, ConfigError, PayloadError
from ring_async.transport import (
    ClientTls,
    DeadlineExceeded,
    ServerTls,
    TransportError,
    check_health,
    open_channel,
    pack_batch,
    start_server,
    status_for,
    unpack_batch,
)
from ring_async.v1 import common_pb2, control_pb2, control_pb2_grpc, generator_pb2, generator_pb2_grpc
from ring_async.v1 import learner_pb2, learner_pb2_grpc
from ring_async.v1 import verifier_pb2, verifier_pb2_grpc

TOKEN = "s3cret-token"


class Learner(learner_pb2_grpc.LearnerServicer):
    """Learner.GetStatus answering after ``delay_s`` (a slow peer, for the deadline tests)."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s

    async def GetStatus(
        self, request: common_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> learner_pb2.LearnerStatus:
        await asyncio.sleep(self.delay_s)
        return learner_pb2.LearnerStatus(learner_id="learner-0", step=7, policy_version=3, last_consumed_step=6)


class EchoVerifier(verifier_pb2_grpc.VerifierServicer):
    """Verifier.Verify that decodes the rollouts with the real codec and marks every one unverifiable."""

    async def Verify(
        self, request: verifier_pb2.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> verifier_pb2.VerifyReply:
        batch = unpack_batch(request.rollouts, ROLLOUT)
        return verifier_pb2.VerifyReply(rollouts=pack_batch(batch, ROLLOUT), verdicts={"unverifiable": batch.num_rows})


class Control(control_pb2_grpc.ControlServicer):
    """Control.StreamRollouts that sends one empty batch, then refuses an unknown reward type."""

    async def StreamRollouts(
        self, request: control_pb2.StreamRolloutsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[control_pb2.StreamRolloutsReply]:
        yield control_pb2.StreamRolloutsReply(rollouts=pack_batch(_rollouts(0), ROLLOUT))
        for reward_type in request.reward_types:
            if reward_type not in ("math", "code", "external"):
                raise ConfigError(f"unknown reward type {reward_type!r}")


class Generator(generator_pb2_grpc.GeneratorServicer):
    """Generator.UpdateWeights that checks each bucket's checksum, optionally reading the stream slowly."""

    def __init__(self, delay_per_chunk_s: float = 0.0):
        self.delay_per_chunk_s = delay_per_chunk_s

    async def UpdateWeights(
        self, request_iterator: AsyncIterator[generator_pb2.WeightChunk], context: grpc.aio.ServicerContext
    ) -> generator_pb2.UpdateWeightsReply:
        buckets = size = 0
        version = -1
        async for chunk in request_iterator:
            await asyncio.sleep(self.delay_per_chunk_s)
            if hashlib.sha256(chunk.data).hexdigest() != chunk.sha256:
                raise PayloadError(f"weight bucket {chunk.bucket_index}: data does not match its sha256")
            buckets, size, version = buckets + 1, size + len(chunk.data), chunk.policy_version
        return generator_pb2.UpdateWeightsReply(policy_version=version, buckets=buckets, bytes=size)


def _chunks(count: int, corrupt: int | None = None) -> list[generator_pb2.WeightChunk]:
    chunks = []
    for index in range(count):
        data = bytes([index]) * 1024
        digest = hashlib.sha256(data if index != corrupt else b"other").hexdigest()
        chunks.append(
            generator_pb2.WeightChunk(
                policy_version=4, bucket_index=index, bucket_count=count, format="safetensors", data=data, sha256=digest
            )
        )
    return chunks


def _rollouts(n: int):
    def tokens(k: int) -> list[list[int]]:
        return [list(range(k)) for _ in range(n)]

    return codec.build_batch(
        ROLLOUT,
        {
            "rollout_id": [f"g0/{i}" for i in range(n)],
            "group_id": ["g0"] * n,
            "prompt_id": ["p0"] * n,
            "sample_index": list(range(n)),
            "prompt_token_ids": tokens(3),
            "response_token_ids": tokens(5),
            "behaviour_logprobs": [[-0.5] * 5 for _ in range(n)],
            "policy_version_first": [0] * n,
            "policy_version_last": [0] * n,
            "finish_reason": ["stop"] * n,
            "reward_type": ["math"] * n,
            "verdict": ["pending"] * n,
            "generation_s": [0.1] * n,
            "verification_s": [0.0] * n,
            "completed_at": [0.0] * n,
        },
    )


def test_health_reports_each_service_and_follows_set_serving() -> None:
    async def scenario() -> None:
        async with await start_server([Learner(), EchoVerifier()], port=0) as server:
            assert server.port > 0
            async with open_channel(server.address) as channel:
                assert await check_health(channel) == "SERVING"
                assert await check_health(channel, "ring_async.v1.Learner") == "SERVING"
                assert await check_health(channel, "ring_async.v1.Verifier") == "SERVING"
                await server.set_serving("ring_async.v1.Learner", False)
                assert await check_health(channel, "ring_async.v1.Learner") == "NOT_SERVING"
                assert await check_health(channel, "ring_async.v1.Verifier") == "SERVING"
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await check_health(channel, "ring_async.v1.Broker")
                assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
                with pytest.raises(ValueError, match="not served here"):
                    await server.set_serving("ring_async.v1.Broker", True)

    asyncio.run(scenario())


def test_reflection_lists_the_registered_services_without_a_token() -> None:
    async def scenario() -> list[str]:
        async with await start_server([Learner()], port=0, auth_token=TOKEN) as server:
            async with open_channel(server.address) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
                async for reply in replies:
                    return [s.name for s in reply.list_services_response.service]
        raise AssertionError("no reflection reply")

    names = asyncio.run(scenario())
    assert "ring_async.v1.Learner" in names
    assert "grpc.health.v1.Health" in names
    assert "ring_async.v1.Broker" not in names


def test_calls_need_the_right_bearer_token_while_health_stays_open() -> None:
    async def scenario() -> dict[str, object]:
        outcomes: dict[str, object] = {}
        async with await start_server([Learner(), Control()], port=0, auth_token=TOKEN) as server:
            for name, token in (("none", None), ("wrong", "not-the-token"), ("right", TOKEN)):
                async with open_channel(server.address, auth_token=token) as channel:
                    try:
                        await learner_pb2_grpc.LearnerStub(channel).GetStatus(common_pb2.StatusRequest())
                        outcomes[name] = "ok"
                    except grpc.aio.AioRpcError as err:
                        outcomes[name] = (err.code(), err.details())
                    outcomes[f"{name}-health"] = await check_health(channel)
            async with open_channel(server.address) as channel:
                stream = control_pb2_grpc.ControlStub(channel).StreamRollouts(control_pb2.StreamRolloutsRequest())
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    async for _ in stream:
                        pass
                outcomes["stream-none"] = refused.value.code()
            async with open_channel(server.address, auth_token=TOKEN) as channel:
                stream = control_pb2_grpc.ControlStub(channel).StreamRollouts(control_pb2.StreamRolloutsRequest())
                outcomes["stream-right"] = len([reply async for reply in stream])
            async with open_channel(server.address) as channel:
                # A hand-made header with another scheme is refused too.
                call = learner_pb2_grpc.LearnerStub(channel).GetStatus(
                    common_pb2.StatusRequest(), metadata=(("authorization", f"Basic {TOKEN}"),)
                )
                with pytest.raises(grpc.aio.AioRpcError) as basic:
                    await call
                outcomes["basic"] = (basic.value.code(), basic.value.details())
        return outcomes

    outcomes = asyncio.run(scenario())
    missing = "missing bearer token: send metadata 'authorization: Bearer <token>'"
    assert outcomes["none"] == (grpc.StatusCode.UNAUTHENTICATED, missing)
    assert outcomes["wrong"] == (grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
    assert outcomes["right"] == "ok"
    assert outcomes["stream-none"] == grpc.StatusCode.UNAUTHENTICATED
    assert outcomes["stream-right"] == 1
    assert outcomes["basic"][0] == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in outcomes["basic"][1]
    assert {outcomes[f"{n}-health"] for n in ("none", "wrong", "right")} == {"SERVING"}


def test_empty_or_unsendable_tokens_are_refused_up_front() -> None:
    async def scenario(token: str) -> None:
        await start_server([Learner()], port=0, auth_token=token)

    for token in ("", "two words", "caf\u00e9"):
        with pytest.raises(ConfigError, match="auth token"):
            asyncio.run(scenario(token))


def test_payload_error_in_a_handler_arrives_as_invalid_argument_with_its_message() -> None:
    garbage = common_pb2.ArrowBatch(ipc=b"not an arrow stream", schema=ROLLOUT.tag, num_rows=1)
    with pytest.raises(PayloadError) as local:
        unpack_batch(garbage, ROLLOUT)

    async def scenario() -> tuple[grpc.aio.AioRpcError, grpc.aio.AioRpcError, verifier_pb2.VerifyReply]:
        async with await start_server([EchoVerifier()], port=0) as server:
            async with open_channel(server.address) as channel:
                stub = verifier_pb2_grpc.VerifierStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as corrupt:
                    await stub.Verify(verifier_pb2.VerifyRequest(rollouts=garbage))
                wrong_kind = common_pb2.ArrowBatch(ipc=b"", schema=PROMPT_GROUP.tag, num_rows=0)
                with pytest.raises(grpc.aio.AioRpcError) as mislabelled:
                    await stub.Verify(verifier_pb2.VerifyRequest(rollouts=wrong_kind))
                good = await stub.Verify(verifier_pb2.VerifyRequest(rollouts=pack_batch(_rollouts(2), ROLLOUT)))
                return corrupt.value, mislabelled.value, good

    corrupt, mislabelled, good = asyncio.run(scenario())
    assert corrupt.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert corrupt.details() == str(local.value)
    assert mislabelled.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert mislabelled.details() == "expected a rollout/v1 batch, got 'prompt_group/v1'"
    assert unpack_batch(good.rollouts, ROLLOUT).column("rollout_id").to_pylist() == ["g0/0", "g0/1"]
    assert dict(good.verdicts) == {"unverifiable": 2}


def test_error_raised_mid_stream_arrives_after_the_messages_already_sent() -> None:
    async def scenario() -> tuple[int, grpc.aio.AioRpcError]:
        async with await start_server([Control()], port=0) as server:
            async with open_channel(server.address) as channel:
                stream = control_pb2_grpc.ControlStub(channel).StreamRollouts(
                    control_pb2.StreamRolloutsRequest(reward_types=["poetry"])
                )
                received = 0
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    async for _ in stream:
                        received += 1
                return received, refused.value

    received, refused = asyncio.run(scenario())
    assert received == 1
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "unknown reward type 'poetry'"


def test_status_codes_follow_the_most_specific_error_class() -> None:
    assert status_for(PayloadError("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(BrokerError("x")) == grpc.StatusCode.FAILED_PRECONDITION
    # A subclass without an entry of its own takes its nearest ancestor's.
    assert status_for(JournalError("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(JournalError("x"), {JournalError: grpc.StatusCode.DATA_LOSS}) == grpc.StatusCode.DATA_LOSS


def test_a_slow_handler_fails_with_a_clear_deadline_error_instead_of_hanging() -> None:
    async def scenario() -> tuple[float, DeadlineExceeded, float]:
        async with await start_server([Learner(delay_s=30.0)], port=0) as server:
            async with open_channel(server.address, default_timeout_s=0.3) as channel:
                stub = learner_pb2_grpc.LearnerStub(channel)
                started = time.monotonic()
                with pytest.raises(DeadlineExceeded) as by_default:
                    await stub.GetStatus(common_pb2.StatusRequest())
                elapsed = time.monotonic() - started
                started = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    await stub.GetStatus(common_pb2.StatusRequest(), timeout=0.1)
                return elapsed, by_default.value, time.monotonic() - started

    elapsed, error, explicit = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(error, TimeoutError)
    assert str(error).startswith("/ring_async.v1.Learner/GetStatus on 127.0.0.1:")
    assert "no reply within 0.3 s (deadline exceeded)" in str(error)
    assert 0.25 < elapsed < 3.0
    assert explicit < 0.25 + 1.0  # an explicit timeout wins over the channel default


def test_client_streams_carry_the_token_map_errors_and_time_out() -> None:
    async def scenario() -> tuple[generator_pb2.UpdateWeightsReply, grpc.aio.AioRpcError, DeadlineExceeded]:
        async with await start_server([Generator()], port=0, auth_token=TOKEN) as server:
            async with open_channel(server.address, auth_token=TOKEN) as channel:
                stub = generator_pb2_grpc.GeneratorStub(channel)
                loaded = await stub.UpdateWeights(iter(_chunks(3)))
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.UpdateWeights(iter(_chunks(3, corrupt=1)))
        async with await start_server([Generator(delay_per_chunk_s=10.0)], port=0) as server:
            async with open_channel(server.address, default_timeout_s=0.3) as channel:
                with pytest.raises(DeadlineExceeded) as slow:
                    await generator_pb2_grpc.GeneratorStub(channel).UpdateWeights(iter(_chunks(3)))
        return loaded, refused.value, slow.value

    loaded, refused, slow = asyncio.run(scenario())
    assert (loaded.policy_version, loaded.buckets, loaded.bytes) == (4, 3, 3 * 1024)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "weight bucket 1: data does not match its sha256"
    assert "/ring_async.v1.Generator/UpdateWeights" in str(slow) and "0.3 s" in str(slow)


def test_batches_beyond_grpc_default_limit_pass_and_the_configured_limit_holds() -> None:
    big = common_pb2.ArrowBatch(ipc=b"\0" * (8 << 20), schema=ROLLOUT.tag, num_rows=1)

    async def scenario() -> tuple[grpc.StatusCode, grpc.StatusCode]:
        codes = []
        for limit in (None, 4 << 20):
            kwargs = {} if limit is None else {"max_message_bytes": limit}
            async with await start_server([EchoVerifier()], port=0, **kwargs) as server:
                async with open_channel(server.address) as channel:
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await verifier_pb2_grpc.VerifierStub(channel).Verify(verifier_pb2.VerifyRequest(rollouts=big))
                    codes.append(refused.value.code())
        return codes[0], codes[1]

    default_limit, small_limit = asyncio.run(scenario())
    assert default_limit == grpc.StatusCode.INVALID_ARGUMENT  # it arrived, and the codec refused the zeros
    assert small_limit == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_port_in_use_is_a_clear_error() -> None:
    async def scenario() -> None:
        async with await start_server([Learner()], port=0) as server:
            with pytest.raises(TransportError, match=f"cannot listen on 127.0.0.1:{server.port}"):
                await start_server([Learner()], port=server.port)

    asyncio.run(scenario())


def test_servicers_must_be_ring_async_services() -> None:
    async def scenario(servicers: list[object]) -> None:
        await start_server(servicers, port=0)

    with pytest.raises(TypeError, match="must derive from exactly one of"):
        asyncio.run(scenario([object()]))
    with pytest.raises(ValueError, match="given twice"):
        asyncio.run(scenario([Learner(), Learner()]))


def _self_signed(tmp_path) -> tuple[bytes, bytes]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ring-async test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    return cert_pem, key_pem


def test_tls_with_token(tmp_path) -> None:
    cert_pem, _ = _self_signed(tmp_path)
    server_tls = ServerTls.from_files(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_tls = ClientTls(root_ca=cert_pem)

    async def scenario() -> tuple[int, grpc.StatusCode]:
        async with await start_server([Learner()], port=0, auth_token=TOKEN, tls=server_tls) as server:
            async with open_channel(server.address, auth_token=TOKEN, tls=client_tls) as channel:
                status = await learner_pb2_grpc.LearnerStub(channel).GetStatus(common_pb2.StatusRequest())
            async with open_channel(server.address, auth_token=TOKEN, default_timeout_s=2.0) as plaintext:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await learner_pb2_grpc.LearnerStub(plaintext).GetStatus(common_pb2.StatusRequest())
            return status.step, refused.value.code()

    step, plaintext_code = asyncio.run(scenario())
    assert step == 7
    assert plaintext_code == grpc.StatusCode.UNAVAILABLE


def test_tls_files_that_are_missing_or_not_pem_name_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="missing.pem: cannot read"):
        ServerTls.from_files(tmp_path / "missing.pem", tmp_path / "key.pem")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(ConfigError, match="junk.pem: not a PEM file"):
        ClientTls.from_files(root_ca=tmp_path / "junk.pem")
