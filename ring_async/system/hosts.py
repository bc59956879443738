"""Role hosts: each builds one core, serves it over gRPC (and /metrics), and runs its work loop.

A host is what a Ray actor holds (``actors/``), and is usable without Ray: tests and single-machine runs start hosts
directly in one event loop. Every host's ``start()`` returns its :class:`Endpoint`; peers are reached by address over
gRPC with the cluster's internal bearer token, so a host never holds another host's objects.

- :class:`BrokerHost`: the durable broker (journal under ``run.run_dir``) and the Broker service.
- :class:`VerifierHost`: the verifier core and the Verifier service; decided external rewards go to the broker.
- :class:`GeneratorHost`: an engine, the generation loop (lease → generate → verify → submit) and the Generator
  service (weight updates, pause).
- :class:`LearnerHost`: the learner core, its loop (pull → train → publish → report) and the Learner service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import grpc
from prometheus_client import CollectorRegistry

from ring_async.broker.prompts import Prompt
from ring_async.config import RingConfig
from ring_async.data.schemas import ROLLOUT
from ring_async.metrics import (
    BrokerCollector,
    GeneratorCollector,
    LearnerCollector,
    StepMetrics,
    VerifierCollector,
    sd_targets,
    serve_metrics,
)
from ring_async.transport import Server, open_channel, pack_batch, split_host_port
from ring_async.v1 import broker_pb2, broker_pb2_grpc

log = logging.getLogger(__name__)

STEPS_FILE = "learner-steps.jsonl"  # one JSON object of metrics per optimizer step, in the run directory


def read_steps(run_dir: str | Path) -> list[dict]:
    """The learner's per-step log of a run directory, oldest first (empty before the first step)."""
    path = Path(run_dir) / STEPS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


@dataclass(frozen=True)
class Endpoint:
    role: str
    instance: str
    address: str  # host:port of the role's gRPC server
    metrics_port: int  # /metrics on the same host

    @property
    def host(self) -> str:
        return split_host_port(self.address)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.address)[1]


class _Host:
    """What every host shares: a gRPC server, a metrics server, background tasks, channels to peers."""

    role = ""

    def __init__(self, config: RingConfig, instance: str, *, host: str = "127.0.0.1", auth_token: str | None = None,
                 metrics_port: int = 0):
        self.config = config
        self.instance = instance
        self.host = host
        self.auth_token = auth_token
        self.registry = CollectorRegistry()
        # Ports to bind (0: any free one; the bound ones are in endpoint()). A host started again after its actor was
        # restarted binds the ports it had, so peers' channels reconnect by themselves and scrape targets stay valid.
        self.port = 0
        self.metrics_port = metrics_port
        self.server: Server | None = None
        self._metrics_server: Any = None
        self._metrics_port = 0
        self._tasks: list[asyncio.Task] = []
        self._channels: list[grpc.aio.Channel] = []

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = open_channel(address, auth_token=self.auth_token)
        self._channels.append(channel)
        return channel

    def _bind(self) -> dict[str, Any]:
        """Where and how the role's gRPC server listens."""
        return {"host": self.host, "port": self.port, "auth_token": self.auth_token}

    def _serve_metrics(self, **kwargs: Any) -> None:
        self._metrics_server, self._metrics_port = serve_metrics(self.registry, port=self.metrics_port,
                                                                 host=self.host, **kwargs)

    def endpoint(self) -> Endpoint:
        assert self.server is not None, "start() first"
        return Endpoint(self.role, self.instance, self.server.address, self._metrics_port)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        task.add_done_callback(self._report)
        self._tasks.append(task)
        return task

    def _report(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s %s: background task failed: %r", self.role, self.instance, task.exception())

    async def _close_role(self) -> None:
        """Role-specific shutdown before the server stops."""

    async def stop(self) -> None:
        if self.server is None:  # never started (e.g. an actor Ray restarted and nobody started again)
            return
        await self._close_role()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.stop(1.0)
        for channel in self._channels:
            await channel.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()


class BrokerHost(_Host):
    role = "broker"

    def __init__(self, config: RingConfig, prompts: Sequence[Prompt], instance: str = "broker", **kwargs: Any):
        super().__init__(config, instance, **kwargs)
        self.prompts = list(prompts)
        self.peers: list[Endpoint] = []  # known once start_control is called

    async def start(self) -> Endpoint:
        from ring_async.broker.durable import DurableBroker
        from ring_async.broker.service import BrokerService, serve_broker

        self.broker = DurableBroker(self.config, self.prompts, run_dir=Path(self.config.run.run_dir))
        self.service = BrokerService(self.broker)
        self.server = await serve_broker(self.service, **self._bind())
        self.registry.register(BrokerCollector(self.broker.status, self.instance,
                                               max_staleness=self.config.algorithm.max_staleness,
                                               pool_staleness=self.broker.core.pool_staleness))
        self._serve_metrics(targets=self.metrics_targets)
        return self.endpoint()

    def metrics_targets(self) -> list[dict]:
        """Every role's /metrics as Prometheus service discovery (served on this host's ``/targets``)."""
        return sd_targets([self.endpoint(), *self.peers])

    async def start_control(self, peers: Sequence[Endpoint], control_token: str, port: int = 0) -> str:
        """Serve the public Control service beside the broker, once every peer is up; returns its address.

        Control calls the peers with the internal token; its own callers need ``control_token``."""
        from ring_async.control import ControlService, serve_control

        self.peers = [e for e in peers if (e.role, e.instance) != (self.role, self.instance)]

        def channels(role: str) -> dict[str, grpc.aio.Channel]:
            return {e.instance: self.channel(e.address) for e in peers if e.role == role}

        self.control = ControlService(self.service, run_id=Path(self.config.run.run_dir).name,
                                      verifiers=channels("verifier"), generators=channels("generator"),
                                      learners=channels("learner"))
        self.control_server = await serve_control(self.control, host=self.host, port=port, auth_token=control_token)
        return self.control_server.address

    def set_peer(self, peer: Endpoint) -> None:
        """A peer came back at a new address: Control calls it there, and /targets lists it there, from now on."""
        self.peers = [peer if (e.role, e.instance) == (peer.role, peer.instance) else e for e in self.peers]
        if getattr(self, "control", None) is not None:
            self.control.set_peer(peer.role, peer.instance, self.channel(peer.address))

    async def _close_role(self) -> None:
        if getattr(self, "control", None) is not None:  # first: it ends the open rollout streams
            await self.control.close()
            await self.control_server.stop(1.0)
        await self.service.close()
        self.broker.close()

    def status(self) -> dict:
        return self.broker.status()


class VerifierHost(_Host):
    role = "verifier"

    def __init__(self, config: RingConfig, broker_address: str, instance: str = "verifier-0", **kwargs: Any):
        super().__init__(config, instance, **kwargs)
        self.broker_address = broker_address

    async def start(self) -> Endpoint:
        from ring_async.verifiers.core import VerifierCore
        from ring_async.verifiers.service import VerifierService, start_verifier_server

        broker = broker_pb2_grpc.BrokerStub(self.channel(self.broker_address))

        async def to_broker(row) -> None:  # an external reward arrived: the rollout goes on to the broker
            await broker.SubmitRollouts(broker_pb2.SubmitRolloutsRequest(rollouts=pack_batch(row, ROLLOUT),
                                                                         submitter_id=self.instance))

        self.core = VerifierCore()
        self.service = VerifierService(self.core, verifier_id=self.instance, on_external=to_broker)
        self.server = await start_verifier_server(self.service, **self._bind())
        self.registry.register(VerifierCollector(self.core.stats, self.instance))
        self._serve_metrics()
        return self.endpoint()

    async def _close_role(self) -> None:
        await self.service.close()
        await self.core.close()


class GeneratorHost(_Host):
    role = "generator"

    def __init__(self, config: RingConfig, policy_path: str, broker_address: str, verifier_address: str,
                 instance: str = "generator-0", **kwargs: Any):
        super().__init__(config, instance, **kwargs)
        self.policy_path = policy_path
        self.broker_address = broker_address
        self.verifier_address = verifier_address
        self._stop = asyncio.Event()

    async def start(self) -> Endpoint:
        from transformers import AutoTokenizer

        from ring_async.engines.generation.clients import GrpcBrokerClient, VerifyThenSubmit
        from ring_async.engines.generation.factory import build_engine
        from ring_async.engines.generation.loop import GenerationLoop
        from ring_async.engines.generation.rollouts import chat_tokenizer
        from ring_async.engines.generation.service import GeneratorService, serve_generator

        gen = self.config.generation
        self.engine = await asyncio.to_thread(build_engine, self.config, self.policy_path)
        await self.engine.start()
        tokenizer = AutoTokenizer.from_pretrained(self.policy_path, local_files_only=True)
        broker_channel = self.channel(self.broker_address)
        broker = GrpcBrokerClient(broker_channel, policy_version=lambda: self.engine.stats().policy_version,
                                  timeout_s=30.0)
        forward = VerifyThenSubmit(self.channel(self.verifier_address), broker_channel, self.instance, timeout_s=120.0)
        self.forward = forward
        self.loop = GenerationLoop(self.engine, broker, forward, config=gen, generator_id=self.instance,
                                   tokenize=chat_tokenizer(tokenizer), tokenizer=tokenizer,
                                   max_staleness=self.config.algorithm.max_staleness)
        self.service = GeneratorService(self.engine, self.loop, weight_update_timeout_s=gen.weight_update_timeout_s)
        self.server = await serve_generator(self.service, **self._bind())
        self.registry.register(GeneratorCollector(self.engine.stats, self.instance, loop_status=self.loop.status))
        self._serve_metrics()
        self._spawn(self.loop.run(self._stop))
        return self.endpoint()

    def set_verifier(self, address: str) -> None:
        """The verifier came back at a new address: score there from now on."""
        self.verifier_address = address
        self.forward.set_verifier(self.channel(address))

    async def _close_role(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.engine.close()


class LearnerHost(_Host):
    role = "learner"

    def __init__(self, config: RingConfig, policy_path: str, broker_address: str, generator_addresses: dict[str, str],
                 instance: str = "learner-0", max_steps: int | None = None, **kwargs: Any):
        super().__init__(config, instance, **kwargs)
        self.policy_path = policy_path
        self.broker_address = broker_address
        self.generator_addresses = dict(generator_addresses)
        self.max_steps = max_steps

    async def start(self) -> Endpoint:
        from ring_async.engines.training import LearnerCore
        from ring_async.engines.training.publisher import WeightPublisher
        from ring_async.engines.training.service import GrpcBatchSource, LearnerLoop, LearnerService, serve_learner

        from ring_async.engines.training.checkpoint import latest

        # A learner started in a run directory that holds a checkpoint resumes from it (after a restart of its actor,
        # or a rerun of the run): the broker re-delivers the steps after it, so none is lost or trained twice.
        resume = latest(self.config)
        if resume is not None:
            log.info("%s resumes from %s", self.instance, resume)
        self.core = await asyncio.to_thread(LearnerCore, self.config, self.policy_path, learner_id=self.instance,
                                            resume_from=resume)
        publisher = WeightPublisher({name: self.channel(address) for name, address in self.generator_addresses.items()},
                                    bucket_bytes=self.config.generation.weight_bucket_bytes,
                                    timeout_s=self.config.learner.publish_timeout_s)
        steps = StepMetrics(self.registry, self.instance)
        run_dir = Path(self.config.run.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        history = (run_dir / STEPS_FILE).open("a", buffering=1)  # line-buffered: `tail -f` follows training

        def on_step(result) -> None:
            steps.observe(result.metrics)
            history.write(json.dumps({"step": result.policy_version, "step_id": result.step_id,
                                      "finished_at": time.time(), **result.metrics}, default=float) + "\n")

        self.loop = LearnerLoop(self.core, GrpcBatchSource(self.channel(self.broker_address), self.instance), publisher,
                                max_steps=self.max_steps, on_step=on_step)
        self._history = history
        self.server = await serve_learner(LearnerService(self.loop), **self._bind())
        self.registry.register(LearnerCollector(self.loop.snapshot, self.instance))
        self._serve_metrics()
        self.done = self._spawn(self._train())
        return self.endpoint()

    async def _train(self) -> None:
        await self.loop.run()
        if self.max_steps is not None and self.core.step >= self.max_steps:
            # The run's result is the final checkpoint: its policy/ folder is what eval and serving load.
            await self.loop.checkpoint_current()

    async def set_generator(self, peer: Endpoint) -> None:
        """A generator was restarted (at ``peer``'s address): push the current policy to it, then publish there."""
        self.generator_addresses[peer.instance] = peer.address
        self.loop.publisher.set_target(peer.instance, self.channel(peer.address))
        report = await self.loop.push_current([peer.instance])
        if report.failed:
            log.warning("%s: version %d not loaded by restarted %s: %s", self.instance, report.version, peer.instance,
                        report.failed[peer.instance])

    async def wait(self) -> dict:
        """Until the loop ends (``max_steps`` taken); the learner's final snapshot."""
        await self.done
        return self.loop.snapshot()

    async def _close_role(self) -> None:
        self.loop.stop()
        self._history.close()
