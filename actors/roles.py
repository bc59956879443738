"""The Ray actors of a run: one per role, each holding a host from :mod:`ring_async.system.hosts`.

An actor adds only what Ray is for: it is placed with resources by the launcher and lives in its own process. The
config travels as its validated dict (validated again on arrival, so every process runs the config that was logged).
"""

from __future__ import annotations

from typing import Any

import ray

from ring_async.config import config_from_dict
from ring_async.system import hosts


class _RoleActor:
    host: Any

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

    async def start(self) -> hosts.Endpoint:
        return await self.host.start()

    async def status(self) -> dict:
        return self.host.status()

    async def start_control(self, peers: list, control_token: str, port: int = 0) -> str:
        return await self.host.start_control(peers, control_token, port)


@ray.remote
class VerifierActor(_RoleActor):
    def __init__(self, config: dict, broker_address: str, **kwargs: Any):
        self.host = hosts.VerifierHost(config_from_dict(config), broker_address, **_on_this_node(kwargs))

    async def start(self) -> hosts.Endpoint:
        return await self.host.start()


@ray.remote
class GeneratorActor(_RoleActor):
    def __init__(self, config: dict, policy_path: str, broker_address: str, verifier_address: str,
                 torch_threads: int = 1, **kwargs: Any):
        _torch_threads(torch_threads)
        self.host = hosts.GeneratorHost(config_from_dict(config), policy_path, broker_address, verifier_address,
                                        **_on_this_node(kwargs))

    async def start(self) -> hosts.Endpoint:
        return await self.host.start()


@ray.remote
class LearnerActor(_RoleActor):
    def __init__(self, config: dict, policy_path: str, broker_address: str, generator_addresses: dict[str, str],
                 torch_threads: int = 1, **kwargs: Any):
        _torch_threads(torch_threads)
        self.host = hosts.LearnerHost(config_from_dict(config), policy_path, broker_address, generator_addresses,
                                      **_on_this_node(kwargs))

    async def start(self) -> hosts.Endpoint:
        return await self.host.start()

    async def wait(self) -> dict:
        return await self.host.wait()

    async def snapshot(self) -> dict:
        return self.host.loop.snapshot()

    async def checkpoint(self) -> str:
        """Stop taking steps and checkpoint the weights as they are (unless a checkpoint already holds them)."""
        self.host.loop.stop()
        async with self.host.loop.engine_lock:  # let a step in progress finish
            last = self.host.core.last_checkpoint
        if last is not None and last.step == self.host.core.step:
            return str(last.path)
        return str((await self.host.loop.checkpoint()).path)
