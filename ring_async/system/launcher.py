"""Placing a run on Ray: one actor per role, wired by address, with an internal bearer token, shut down cleanly.

Local (no ``address``): an embedded Ray instance with this machine's CPUs; every server binds loopback. On a cluster
(``address`` of a running Ray head) each actor binds its node's address and reports it. Resources: each generator
and the learner take one CPU (or a GPU where the config asks for CUDA); the broker and the verifier are light
coordinators and take none, so a 2-core machine runs one generator and one learner side by side.

Placement on a cluster: the broker (and Control beside it) runs on the driver's node, so its journal, the Control
port and the metrics discovery URL are on a node the operator chose (the head, for ``ray job submit``). Where the
cluster advertises a custom resource ``ring_async_<role>`` (``ring_async_verifier``, ``ring_async_generator``,
``ring_async_learner``), each actor of that role takes one unit of it, which pins roles to node groups
(deploy/ray, deploy/kubernetes); without it Ray places them by CPU/GPU alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ring_async.broker.prompts import Prompt
from ring_async.config import RingConfig
from ring_async.metrics import targets_url
from ring_async.system.hosts import Endpoint
from ring_async.system.supervisor import Supervisor
from ring_async.transport import split_host_port

log = logging.getLogger(__name__)


@dataclass
class RayRunResult:
    endpoints: list[Endpoint] = field(default_factory=list)
    control_address: str = ""  # the public Control service (next to the broker)
    control_token: str = ""  # the bearer token Control's callers need
    learner: dict[str, Any] = field(default_factory=dict)  # the learner's final snapshot
    broker: dict[str, Any] = field(default_factory=dict)  # the broker's final status (accounting)
    generators: dict[str, dict[str, Any]] = field(default_factory=dict)  # instance -> its loop's final counters
    wall_s: float = 0.0
    restarts: dict[str, int] = field(default_factory=dict)  # role instance -> times it was restarted


def actor_name(config: RingConfig, instance: str) -> str:
    """The Ray actor name of a role instance in a run (unique on a cluster while the run lives)."""
    return f"ring-async:{config.run.name}:{instance}"


def _gpu_share(device: str) -> float:
    import torch

    return 1.0 if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else 0.0


def _role_resources(ray, role: str) -> dict[str, float]:
    """One unit of ``ring_async_<role>`` when the cluster advertises it (node groups made for that role), else none."""
    name = f"ring_async_{role}"
    return {name: 1.0} if ray.cluster_resources().get(name, 0) > 0 else {}


def _on_driver_node(ray) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def _follow(ray, supervisor: Supervisor, learner: str, max_steps: int | None, timeout_s: float | None,
            time_budget_s: float | None, progress: bool) -> dict[str, Any]:
    """Wait for the learner to finish (or the time budget to pass), showing step, reward, tokens/s and the ETA, and
    bringing restarted roles back meanwhile."""
    from ray.exceptions import RayActorError
    from tqdm.auto import tqdm

    def actor():  # the handle stays valid across restarts of the actor
        return supervisor.roles[learner].actor

    done, waited_on = actor().wait.remote(), 0  # the learner's restarts when `done` was asked
    now = time.monotonic()
    deadline = now + timeout_s if timeout_s is not None else None
    budget_end = now + time_budget_s if time_budget_s is not None else None
    with tqdm(total=max_steps, desc="rl", unit="step", disable=not progress, dynamic_ncols=True) as bar:
        while True:
            wait = 2.0 if budget_end is None else max(0.0, min(2.0, budget_end - time.monotonic()))
            if done is None:
                time.sleep(wait)
            elif ray.wait([done], timeout=wait)[0]:
                try:
                    final = ray.get(done)
                    bar.update(final["step"] - bar.n)
                    return final
                except RayActorError:  # the learner died: wait again once Ray and the supervisor bring it back
                    done = None
            if budget_end is not None and time.monotonic() >= budget_end:
                return ray.get(actor().snapshot.remote())
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the learner did not finish {max_steps} steps within {timeout_s} s")
            supervisor.check()
            if supervisor.roles[learner].restarts != waited_on:  # started again: its old `wait` will never answer
                done, waited_on = actor().wait.remote(), supervisor.roles[learner].restarts
            if done is None:
                continue
            try:
                snap = ray.get(actor().snapshot.remote(), timeout=30)
            except Exception:  # restarting: the next round sees it
                continue
            last = snap["last_step_metrics"]
            bar.update(snap["step"] - bar.n)
            if last:
                bar.set_postfix(reward=f"{last['reward_mean']:.3f}", entropy=f"{last['entropy']:.3f}",
                                tok_s=f"{snap['tokens_per_s']:,.0f}", refresh=False)


def _generator_statuses(ray, endpoints: list[Endpoint], actors: list[Any]) -> dict[str, dict[str, Any]]:
    """Each generator's final loop counters; {} for one that cannot answer (it died and was not restarted)."""
    statuses = {}
    for endpoint, actor in zip(endpoints, actors):
        try:
            statuses[endpoint.instance] = ray.get(actor.status.remote(), timeout=30)
        except Exception as err:
            log.warning("%s: no final status: %s", endpoint.instance, err)
            statuses[endpoint.instance] = {}
    return statuses


def run_on_ray(config: RingConfig, policy_path: str, prompts: Sequence[Prompt], *, max_steps: int | None,
               address: str | None = None, generators: int = 1, timeout_s: float | None = None,
               progress: bool = True, control_token: str | None = None, control_port: int = 0,
               time_budget_s: float | None = None, actor_logs: bool = True, metrics_port: int = 0,
               on_started: Callable[[RayRunResult], None] | None = None) -> RayRunResult:
    """Train ``max_steps`` optimizer steps with the roles as Ray actors; returns when the learner is done.

    ``time_budget_s`` ends the run that many seconds after every role is up, whatever the step count (benchmarks
    compare modes on equal time); the step in progress then is not waited for and no final checkpoint is written.
    ``actor_logs=False`` keeps the actors' output off this process's stdout (a benchmark prints only its JSON).

    ``max_steps=None`` is a long-running service: it trains until interrupted (KeyboardInterrupt, which ``serve``
    raises on SIGTERM too), then writes a final checkpoint and stops every role.

    The public Control service is served next to the broker with ``control_token`` (a fresh random one when None,
    returned in the result); ``on_started`` is called once every role and Control are up. ``metrics_port`` fixes the
    broker's /metrics port (0: any free one), which also serves ``/targets``: Prometheus HTTP service discovery of
    every role's /metrics (the other roles bind free ports)."""
    import ray

    from actors.roles import BrokerActor, GeneratorActor, LearnerActor, VerifierActor

    started = time.monotonic()
    local = address is None
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(address=address, num_cpus=os.cpu_count() if local else None, include_dashboard=False,
                 log_to_driver=actor_logs, configure_logging=False)
    token = secrets.token_urlsafe(32)
    host = {"host": "127.0.0.1"} if local else {}
    common = {"auth_token": token, **host}
    cfg = config.model_dump(mode="json")
    actors: list[Any] = []
    result = RayRunResult(control_token=control_token or secrets.token_urlsafe(32))
    try:
        def opts(instance: str, role: str) -> dict[str, Any]:
            # Named after the run, so operators (and tests) find a role with ray.get_actor(actor_name(...)); the
            # broker stays on the driver's node (its journal, Control and /targets live there, and a restarted
            # broker must come back at the same address); the others take their node group's resource, if any.
            placement = ({"scheduling_strategy": _on_driver_node(ray)} if role == "broker"
                         else {"resources": _role_resources(ray, role)})
            return {"max_restarts": config.run.max_restarts, "name": actor_name(config, instance), **placement}

        broker = BrokerActor.options(num_cpus=0, **opts("broker", "broker")).remote(
            cfg, list(prompts), metrics_port=metrics_port, **common)
        actors.append(broker)
        b = ray.get(broker.start.remote())
        verifier = VerifierActor.options(num_cpus=0, **opts("verifier-0", "verifier")).remote(cfg, b.address, **common)
        actors.append(verifier)
        v = ray.get(verifier.start.remote())
        gens = [GeneratorActor.options(num_cpus=1, num_gpus=_gpu_share(config.generation.device),
                                       **opts(f"generator-{i}", "generator")).remote(
                    cfg, str(policy_path), b.address, v.address, instance=f"generator-{i}", **common)
                for i in range(generators)]
        actors.extend(gens)
        g = ray.get([gen.start.remote() for gen in gens])
        learner = LearnerActor.options(num_cpus=1, num_gpus=_gpu_share(config.learner.device),
                                       **opts("learner-0", "learner")).remote(
            cfg, str(policy_path), b.address, {e.instance: e.address for e in g}, max_steps=max_steps, **common)
        actors.append(learner)
        result.endpoints = [b, v, *g, ray.get(learner.start.remote())]
        for e in result.endpoints:
            log.info("%s %s at %s (metrics on port %d)", e.role, e.instance, e.address, e.metrics_port)
        result.control_address = ray.get(broker.start_control.remote(result.endpoints, result.control_token,
                                                                     control_port))
        supervisor = Supervisor(ray, result.control_token)
        supervisor.control_port = split_host_port(result.control_address)[1]
        for actor, endpoint in zip(actors, result.endpoints):
            supervisor.add(actor, endpoint)
        log.info("control at %s; every role's /metrics listed at %s", result.control_address, targets_url(b))
        if on_started is not None:
            on_started(result)
        try:
            result.learner = _follow(ray, supervisor, result.endpoints[-1].instance, max_steps, timeout_s,
                                     time_budget_s, progress)
        except KeyboardInterrupt:
            log.info("stopping: a final checkpoint first")
            ray.get(learner.checkpoint.remote(), timeout=600)
            result.learner = ray.get(learner.snapshot.remote())
        result.broker = ray.get(broker.status.remote())
        result.generators = _generator_statuses(ray, g, gens)
        result.restarts = supervisor.restarts
    finally:
        # The learner first (it pulls from the broker), the broker last (everyone reports to it).
        for actor in reversed(actors):
            try:
                ray.get(actor.stop.remote(), timeout=60)
            except Exception as err:  # a dead actor has nothing left to stop
                log.warning("stopping an actor: %s", err)
        for actor in actors:
            ray.kill(actor)
        if owns_ray:
            ray.shutdown()
    result.wall_s = time.monotonic() - started
    return result
