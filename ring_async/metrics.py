"""Prometheus metrics of every role, prefix ``ring_async_`` (docs/operations.md lists them with their meaning).

Counters and gauges are read from the cores **at scrape time** by collectors (broker accounting, generator engine
stats, verifier verdicts, learner status), so nothing in a hot path updates a metric and a scrape always sees one
consistent snapshot of each core. What only exists at the moment it happens — a training step's duration, loss terms,
gradient norm, the staleness of its rows — is recorded by :class:`StepMetrics` when the step ends.

Every role process serves its own registry on ``/metrics`` (:func:`serve_metrics`); labels ``role`` and ``instance``
(the actor's stable id) let one scrape configuration cover all of them.
"""

from __future__ import annotations

import json
import math
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ring_async.transport import split_host_port

PREFIX = "ring_async_"

# Learner step duration buckets (seconds): tiny CPU steps to multi-minute GPU steps.
STEP_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STALENESS_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 16)


def _labels(role: str, instance: str) -> dict[str, str]:
    return {"role": role, "instance": instance}


def _gauge(name: str, doc: str, value: float, labels: Mapping[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), float(value))
    return family


def _counter(name: str, doc: str, value: float, labels: Mapping[str, str]) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), float(value))
    return family


def _by_key(name: str, doc: str, key: str, values: Mapping[str, float], labels: Mapping[str, str],
            kind: type = CounterMetricFamily) -> Metric:
    family = kind(PREFIX + name, doc, labels=[*labels, key])
    for k, v in sorted(values.items()):
        family.add_metric([*labels.values(), str(k)], float(v))
    return family


class BrokerCollector(Collector):
    """Broker accounting: every rollout and token by outcome, queue depths, steps, policy version, staleness.

    ``max_staleness`` (the configured bound) and ``pool_staleness`` (the lag of the oldest pooled rollout) are
    exported when given, so that alert rules can compare staleness with the bound of the running configuration."""

    def __init__(self, status: Callable[[], Mapping[str, Any]], instance: str = "broker", *,
                 max_staleness: int | None = None, pool_staleness: Callable[[], int] | None = None):
        self._status = status
        self._labels = _labels("broker", instance)
        self._max_staleness = max_staleness
        self._pool_staleness = pool_staleness

    def collect(self) -> Iterable[Metric]:
        s, lb = self._status(), self._labels
        yield _by_key("broker_rollouts", "Accepted rollouts by outcome (accepted is the total)", "outcome",
                      s["rollouts"], lb)
        yield _by_key("broker_tokens", "Response tokens of accepted rollouts by outcome (cut_tail: dropped tails)",
                      "outcome", s["tokens"], lb)
        yield _by_key("broker_rejected_rollouts", "Rollouts refused without being accepted, by reason", "reason",
                      s["rejected_rollouts"], lb)
        yield _by_key("broker_injected_rollouts", "Rollouts of prompts injected through Control, by outcome",
                      "outcome", s.get("injected_rollouts", {}), lb)
        yield _counter("broker_steps_emitted", "Train batches emitted", s["steps_emitted"], lb)
        yield _gauge("broker_policy_version", "Latest policy version the learner reported", s["policy_version"], lb)
        for key, doc in (("queued_prompts", "Prompts queued (injected and requeued)"),
                         ("leased_groups", "Prompt groups leased and not yet complete"),
                         ("pool_tokens", "Response tokens of usable pooled rollouts"),
                         ("pool_rollouts", "Usable rollouts in the pool"),
                         ("pending_rollouts", "Accepted rollouts of incomplete groups")):
            yield _gauge(f"broker_{key}", doc, s[key], lb)
        if self._max_staleness is not None:
            yield _gauge("broker_max_staleness", "Configured bound: policy versions a rollout may lag the learner",
                         self._max_staleness, lb)
        if self._pool_staleness is not None:
            yield _gauge("broker_pool_staleness", "Learner version minus the oldest version in the pool (0: empty)",
                         self._pool_staleness(), lb)


class GeneratorCollector(Collector):
    """A generator: loaded policy version, throughput, work in flight, weight updates.

    With ``loop_status`` (the generation loop's ``status``) it also exports the pause state and the loop's lease and
    forward errors, so that an idle generator can be told apart from a paused one or one that cannot reach its peers."""

    def __init__(self, stats: Callable[[], Any], instance: str = "generator-0", *,
                 loop_status: Callable[[], Any] | None = None):
        self._stats = stats
        self._loop_status = loop_status
        self._labels = _labels("generator", instance)

    def collect(self) -> Iterable[Metric]:
        s, lb = self._stats(), self._labels
        yield _gauge("generator_policy_version", "Policy version of the loaded weights", s.policy_version, lb)
        yield _counter("generator_tokens", "Tokens generated", s.generated_tokens, lb)
        yield _counter("generator_samples", "Samples completed", s.completed_samples, lb)
        yield _gauge("generator_tokens_per_second", "Generated tokens per second over the last minute",
                     s.tokens_per_s, lb)
        yield _gauge("generator_running", "Sequences decoding now", s.running, lb)
        yield _gauge("generator_waiting", "Sequences waiting for a batch slot", s.waiting, lb)
        yield _counter("generator_weight_updates", "Weight updates loaded", s.weight_updates, lb)
        yield _counter("generator_weight_updates_refused", "Weight updates refused (old weights kept)",
                       s.refused_weight_updates, lb)
        if self._loop_status is not None:
            loop = self._loop_status()
            yield _gauge("generator_paused", "1 while paused through Control.Pause", loop.pause.paused, lb)
            yield _gauge("generator_inflight_groups", "Leased groups held (generating or waiting for a slot)",
                         loop.inflight_groups, lb)
            yield _counter("generator_lease_errors", "Lease calls to the broker that failed", loop.lease_errors, lb)
            yield _counter("generator_forward_errors", "Verify-then-submit calls that failed", loop.forward_errors,
                           lb)
            yield _counter("generator_stale_aborted", "Samples stopped because the policy version made them stale",
                           loop.stale_aborted, lb)


class VerifierCollector(Collector):
    """A verifier: verdicts by reward type, latency percentiles, queue depth, rollouts awaiting external rewards."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]], instance: str = "verifier-0"):
        self._stats = stats
        self._labels = _labels("verifier", instance)

    def collect(self) -> Iterable[Metric]:
        s, lb = self._stats(), self._labels
        verdicts = CounterMetricFamily(PREFIX + "verifier_verdicts", "Rollouts verified, by reward type and verdict",
                                       labels=[*lb, "reward_type", "verdict"])
        latency = GaugeMetricFamily(PREFIX + "verifier_latency_seconds",
                                    "Seconds from admission to verdict (recent window), by reward type and quantile",
                                    labels=[*lb, "reward_type", "quantile"])
        for kind, data in sorted(s["by_type"].items()):
            for verdict, n in sorted(data["verdicts"].items()):
                verdicts.add_metric([*lb.values(), kind, verdict], n)
            for q, key in (("0.5", "latency_p50_s"), ("0.99", "latency_p99_s")):
                if data[key] is not None:
                    latency.add_metric([*lb.values(), kind, q], data[key])
        yield verdicts
        yield latency
        yield _gauge("verifier_queued", "Rollouts received and waiting for a checker or sandbox slot",
                     s.get("queued", 0), lb)
        yield _gauge("verifier_running", "Rollouts being scored now", s.get("running", 0), lb)
        yield _gauge("verifier_awaiting_external", "Rollouts waiting for an external reward",
                     s["waiting_external"], lb)


class LearnerCollector(Collector):
    """A learner: steps, policy version, last consumed broker step, the last step's scalars as gauges."""

    # The last step's scalars exported as gauges (name in StepResult.metrics -> metric suffix, help).
    LAST_STEP = {
        "loss": ("learner_loss", "Loss of the last step (all terms)"),
        "pg_loss": ("learner_pg_loss", "Policy-gradient term of the last step"),
        "entropy": ("learner_entropy", "Mean token entropy of the last step's loss tokens (nats)"),
        "kl": ("learner_kl", "Mean k3 KL to the reference over the last step's loss tokens"),
        "clip_fraction": ("learner_clip_fraction", "Share of loss tokens where the PPO clip was active"),
        "grad_norm": ("learner_grad_norm", "Global gradient norm of the last step, before clipping"),
        "loss_tokens": ("learner_loss_tokens", "Loss-bearing tokens of the last step (Φ in exact mode)"),
        "reward_mean": ("learner_reward_mean", "Mean reward of the last step's rows"),
        "tokens_per_s": ("learner_tokens_per_second", "Loss tokens per second of the last step"),
        "logprob_mismatch_mean": ("learner_logprob_mismatch", "Mean |learner - generator| logprob, current version"),
        "staleness_mean": ("learner_staleness_mean", "Mean staleness (versions) of the last step's rows"),
    }

    def __init__(self, status: Callable[[], Mapping[str, Any]], instance: str = "learner-0"):
        self._status = status
        self._labels = _labels("learner", instance)

    def collect(self) -> Iterable[Metric]:
        s, lb = self._status(), self._labels
        yield _counter("learner_steps", "Optimizer steps taken", s["step"], lb)
        yield _gauge("learner_policy_version", "Policy version of the learner's weights", s["policy_version"], lb)
        yield _gauge("learner_last_consumed_step", "Broker step id of the last batch trained on",
                     s["last_consumed_step"], lb)
        yield _gauge("learner_last_checkpoint_step", "Step of the latest complete checkpoint (-1: none)",
                     s["last_checkpoint_step"], lb)
        for counter in ("refused_batches", "publish_failures", "broker_unreachable"):
            if counter in s:
                yield _counter(f"learner_{counter}", counter.replace("_", " ").capitalize(), s[counter], lb)
        last = s.get("last_step_metrics", {})
        for key, (name, doc) in self.LAST_STEP.items():
            value = last.get(key)
            if isinstance(value, (int, float)) and not math.isnan(value):
                yield _gauge(name, doc, value, lb)


class StepMetrics:
    """What a learner records at the end of each step: durations and the staleness of the rows it trained."""

    def __init__(self, registry: CollectorRegistry, instance: str = "learner-0"):
        lb = _labels("learner", instance)
        self.step_seconds = Histogram(PREFIX + "learner_step_seconds", "Wall seconds of one optimizer step",
                                      list(lb), buckets=STEP_SECONDS_BUCKETS, registry=registry).labels(**lb)
        self.staleness = Histogram(PREFIX + "learner_row_staleness", "Versions a trained row lagged the learner",
                                   list(lb), buckets=STALENESS_BUCKETS, registry=registry).labels(**lb)

    def observe(self, metrics: Mapping[str, Any]) -> None:
        self.step_seconds.observe(metrics["wall_s"])
        for versions, rows in metrics.get("staleness_hist", {}).items():
            for _ in range(int(rows)):
                self.staleness.observe(float(versions))


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never keeps the process alive


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape would flood the actor logs
        pass


def serve_metrics(registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1",
                  targets: Callable[[], list[dict]] | None = None) -> tuple[Any, int]:
    """Serve ``registry`` on ``http://host:port/metrics`` in a background thread; returns (server, bound port).

    With ``targets``, ``/targets`` answers Prometheus' HTTP service discovery (``http_sd_configs``): a JSON list of
    ``{"targets": ["host:port"], "labels": {...}}`` groups, so one fixed URL finds every role's /metrics even though
    those bind free ports on whichever nodes Ray placed them. Any other path is the metrics exposition."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if targets is not None and environ.get("PATH_INFO") == "/targets":
            body = json.dumps(targets()).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics_app(environ, start_response)

    server = make_server(host, port, app, _ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server, server.server_address[1]


def sd_targets(endpoints: Iterable[Any]) -> list[dict]:
    """Prometheus service-discovery groups for role endpoints (anything with role, instance, address, metrics_port).

    The ``instance`` label is the actor id, as in the role's own metrics, so ``up{instance="generator-0"}`` and
    ``ring_async_generator_running{instance="generator-0"}`` name the same actor (scrape with ``honor_labels``)."""
    return [{"targets": [f"{split_host_port(e.address)[0]}:{e.metrics_port}"],
             "labels": {"role": e.role, "instance": e.instance}} for e in endpoints]


def targets_url(broker: Any) -> str:
    """Where the broker's metrics server answers Prometheus service discovery for every role."""
    return f"http://{split_host_port(broker.address)[0]}:{broker.metrics_port}/targets"
