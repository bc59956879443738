"""The gRPC contracts: checked-in generated code is current, importable, documented, and has the expected methods."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from ring_async import protogen
from ring_async.transport.services import SERVICES

# Service -> method -> (client streams, server streams).
EXPECTED_METHODS: dict[str, dict[str, tuple[bool, bool]]] = {
    "ring_async.v1.Broker": {
        "LeasePrompts": (False, False),
        "SubmitRollouts": (False, False),
        "NextTrainBatch": (False, False),
        "AcknowledgeSteps": (False, False),
        "ReportPolicyVersion": (False, False),
        "GetStatus": (False, False),
    },
    "ring_async.v1.Generator": {
        "UpdateWeights": (True, False),
        "GetStatus": (False, False),
        "Pause": (False, False),
        "Resume": (False, False),
    },
    "ring_async.v1.Verifier": {
        "Verify": (False, False),
        "GetStatus": (False, False),
        "SubmitRewards": (False, False),
        "StreamRollouts": (False, True),
    },
    "ring_async.v1.Learner": {"GetStatus": (False, False), "Checkpoint": (False, False)},
    "ring_async.v1.Control": {
        "SubmitPrompts": (False, False),
        "SubmitRewards": (False, False),
        "StreamRollouts": (False, True),
        "GetStatus": (False, False),
        "Pause": (False, False),
        "Resume": (False, False),
        "Checkpoint": (False, False),
    },
}

# FileDescriptorProto field numbers, as used in SourceCodeInfo location paths.
_MESSAGE_TYPE, _SERVICE, _FIELD, _NESTED_TYPE, _METHOD = 4, 6, 2, 3, 2


def test_checked_in_code_matches_the_protos(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    stale = protogen.stale_files(protogen.REPO_ROOT, tmp_path)
    assert not stale, (
        f"generated gRPC code in ring_async/v1/ is out of date with proto/ring_async/v1/: {', '.join(stale)}. "
        "Run `make proto` and commit the result."
    )


@pytest.mark.parametrize("name", [n for n in protogen.generated_names() if n.endswith(".py")])
def test_every_generated_module_imports(name: str) -> None:
    module = importlib.import_module(f"ring_async.v1.{name.removesuffix('.py')}")
    assert module.__name__.startswith("ring_async.v1.")


def test_each_service_has_the_expected_methods_and_streaming_shape() -> None:
    assert set(SERVICES) == set(EXPECTED_METHODS)
    for name, expected in EXPECTED_METHODS.items():
        descriptor = SERVICES[name].descriptor
        actual = {m.name: (m.client_streaming, m.server_streaming) for m in descriptor.methods}
        assert actual == expected, name
        for method in descriptor.methods:
            # Each method is reachable from the generated stub and has an overridable servicer default.
            assert hasattr(SERVICES[name].servicer_base, method.name)


def test_every_message_field_service_and_method_is_commented(tmp_path: Path) -> None:
    from grpc_tools import protoc

    out = tmp_path / "descriptors.pb"
    files = protogen.proto_files()
    args = ["protoc", f"-I{protogen.PROTO_ROOT}", f"--descriptor_set_out={out}", "--include_source_info"]
    assert protoc.main([*args, *map(str, files)]) == 0
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())

    missing = []
    for file in descriptors.file:
        commented = {
            tuple(loc.path)
            for loc in file.source_code_info.location
            if (loc.leading_comments or loc.trailing_comments).strip()
        }

        def check(path: tuple[int, ...], what: str) -> None:
            if path not in commented:
                missing.append(f"{file.name}: {what}")

        def check_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str) -> None:
            if message.options.map_entry:
                return  # synthesized for map<,> fields, documented at the field
            check(path, prefix + message.name)
            for i, field in enumerate(message.field):
                check((*path, _FIELD, i), f"{prefix}{message.name}.{field.name}")
            for i, nested in enumerate(message.nested_type):
                check_message(nested, (*path, _NESTED_TYPE, i), f"{prefix}{message.name}.")

        for i, message in enumerate(file.message_type):
            check_message(message, (_MESSAGE_TYPE, i), "")
        for i, service in enumerate(file.service):
            check((_SERVICE, i), service.name)
            for j, method in enumerate(service.method):
                check((_SERVICE, i, _METHOD, j), f"{service.name}.{method.name}")
    assert not missing, "undocumented in the .proto files: " + ", ".join(missing)
