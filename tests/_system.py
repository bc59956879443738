"""The four role hosts over real gRPC in one event loop, with Control beside the broker: what several tests run."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from typing import AsyncIterator, Sequence

from ring_async.broker.prompts import Prompt
from ring_async.config import RingConfig
from ring_async.system.hosts import BrokerHost, Endpoint, GeneratorHost, LearnerHost, VerifierHost


@dataclass
class System:
    broker: BrokerHost
    learner: LearnerHost
    hosts: list  # in the order they stop: learner, generator, verifier, broker
    endpoints: dict[str, Endpoint]  # role -> endpoint
    control_address: str
    control_token: str
    token: str  # the internal one


async def start_system(config: RingConfig, prompts: Sequence[Prompt], policy: str, max_steps: int) -> System:
    token, control_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    broker = BrokerHost(config, prompts, auth_token=token)
    b = await broker.start()
    verifier = VerifierHost(config, b.address, auth_token=token)
    v = await verifier.start()
    generator = GeneratorHost(config, policy, b.address, v.address, auth_token=token)
    g = await generator.start()
    learner = LearnerHost(config, policy, b.address, {g.instance: g.address}, max_steps=max_steps, auth_token=token)
    ep = await learner.start()
    control_address = await broker.start_control([b, v, g, ep], control_token)  # this also sets /targets
    return System(broker, learner, [learner, generator, verifier, broker], {e.role: e for e in (b, v, g, ep)},
                  control_address, control_token, token)


async def stop_system(system: System) -> None:
    for host in system.hosts:
        await host.stop()


@contextlib.asynccontextmanager
async def running_system(config: RingConfig, prompts: Sequence[Prompt], policy, max_steps: int
                         ) -> AsyncIterator[System]:
    system = await start_system(config, prompts, str(policy), max_steps)
    try:
        yield system
    finally:
        await stop_system(system)
