"""The Ray actors of a run: one per role, each holding a host from :mod:`ring_async.system.hosts`.

An actor adds only what Ray is for: it is placed with resources by the launcher and lives in its own process. The
config travels as its validated dict (validated again on arrival, so every process runs the config that was logged).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ray

from ring_async.config import config_from_dict
from ring_async.system import hosts


class _RoleActor:
    host: Any

    async def start(self, port: int = 0, metrics_port: int = 0) -> hosts.Endpoint:
        """Start the host; after a restart of this actor, on the ports it had (0: the host's own choice)."""
        self.host.port = port or self.host.port
        self.host.metrics_port = metrics_port or self.host.metrics_port
        return await self.host.start()

    async def started(self) -> bool:
        """False in an actor Ray has just restarted: its host is new and needs starting (and its peers may need
        its new address)."""
        return self.host.server is not None

    async def endpoint(self) -> hosts.Endpoint:
        return self.host.endpoint()

    async def stop(self) -> None:
        await self.host.stop()


def _on_this_node(kwargs: dict) -> dict:
    """Bind the role's servers to this node's address unless told otherwise (the launcher says 127.0.0.1 locally):
    on a cluster its peers and Prometheus reach it from other nodes."""
    kwargs.setdefault("host", ray.util.get_node_ip_address())
    return kwargs


def _torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


@ray.remote
class BrokerActor(_RoleActor):
    def __init__(self, config: dict, prompts: list, **kwargs: Any):
        self.host = hosts.BrokerHost(config_from_dict(config), prompts, **_on_this_node(kwargs))

    async def status(self) -> dict:
        return self.host.status()

    async def start_control(self, peers: list, control_token: str, port: int = 0) -> str:
        return await self.host.start_control(peers, control_token, port)

    async def set_peer(self, peer: hosts.Endpoint) -> None:
        self.host.set_peer(peer)


@ray.remote
class VerifierActor(_RoleActor):
    def __init__(self, config: dict, broker_address: str, **kwargs: Any):
        self.host = hosts.VerifierHost(config_from_dict(config), broker_address, **_on_this_node(kwargs))


@ray.remote
class GeneratorActor(_RoleActor):
    def __init__(self, config: dict, policy_path: str, broker_address: str, verifier_address: str,
                 torch_threads: int = 1, **kwargs: Any):
        _torch_threads(torch_threads)
        self.host = hosts.GeneratorHost(config_from_dict(config), policy_path, broker_address, verifier_address,
                                        **_on_this_node(kwargs))

    async def set_verifier(self, address: str) -> None:
        self.host.set_verifier(address)

    async def status(self) -> dict:
        """The generation loop's counters (leases, forwards, stale samples stopped) as plain values."""
        return dataclasses.asdict(self.host.loop.status())


@ray.remote
class LearnerActor(_RoleActor):
    def __init__(self, config: dict, policy_path: str, broker_address: str, generator_addresses: dict[str, str],
                 torch_threads: int = 1, **kwargs: Any):
        _torch_threads(torch_threads)
        self.host = hosts.LearnerHost(config_from_dict(config), policy_path, broker_address, generator_addresses,
                                      **_on_this_node(kwargs))

    async def wait(self) -> dict:
        return await self.host.wait()

    async def set_generator(self, peer: hosts.Endpoint) -> None:
        await self.host.set_generator(peer)

    async def snapshot(self) -> dict:
        return self.host.loop.snapshot()

    async def checkpoint(self) -> str:
        """Stop taking steps and checkpoint the weights as they are (unless a checkpoint already holds them)."""
        self.host.loop.stop()
        return str((await self.host.loop.checkpoint_current()).path)
