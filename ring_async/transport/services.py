"""The ring-async gRPC services: for each, its full name, generated servicer base class, registration function and stub.

A server is given servicer instances; this table tells which service each one implements (by its generated base
class), so registration, health status and reflection all follow from the instance alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from ring_async.v1 import (
    broker_pb2,
    broker_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
    learner_pb2,
    learner_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
)


@dataclass(frozen=True)
class ServiceSpec:
    descriptor: ServiceDescriptor
    servicer_base: type
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    stub: type

    @property
    def name(self) -> str:
        """The full service name, as in health checks, reflection and method paths: ``ring_async.v1.Broker``."""
        return self.descriptor.full_name

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.descriptor.methods)


def _spec(pb2: Any, pb2_grpc: Any, service: str) -> ServiceSpec:
    return ServiceSpec(
        descriptor=pb2.DESCRIPTOR.services_by_name[service],
        servicer_base=getattr(pb2_grpc, f"{service}Servicer"),
        add_to_server=getattr(pb2_grpc, f"add_{service}Servicer_to_server"),
        stub=getattr(pb2_grpc, f"{service}Stub"),
    )


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        _spec(broker_pb2, broker_pb2_grpc, "Broker"),
        _spec(generator_pb2, generator_pb2_grpc, "Generator"),
        _spec(verifier_pb2, verifier_pb2_grpc, "Verifier"),
        _spec(learner_pb2, learner_pb2_grpc, "Learner"),
        _spec(control_pb2, control_pb2_grpc, "Control"),
    )
}


def spec_for(servicer: object) -> ServiceSpec:
    """The service ``servicer`` implements, from the generated base class it derives from."""
    matches = [spec for spec in SERVICES.values() if isinstance(servicer, spec.servicer_base)]
    if len(matches) != 1:
        bases = ", ".join(s.servicer_base.__qualname__ for s in SERVICES.values())
        found = "several of them" if matches else "none of them"
        raise TypeError(
            f"{type(servicer).__qualname__} must derive from exactly one of {bases}; it derives from {found}"
        )
    return matches[0]
