"""deploy/'s monitoring against a running system: the four role hosts over real gRPC train a few steps, and

- every ring_async_* metric a dashboard panel or a rule reads is in a scrape of their /metrics;
- a real Prometheus, configured from deploy/prometheus/prometheus.yml, finds every role through the broker's
  /targets, scrapes them, evaluates the shipped rules without error, and answers a training metric over its API.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from _deploy import DEPLOY, require_binary, used_metric_names
from _system import start_system, stop_system
from _tiny_lm import one_torch_thread
from ring_async.system.inprocess import prompts_from_records
from ring_async.tasks.math_tasks import math_task

from test_hosts import short_config
from test_learner import policy_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e
STEPS = 2


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    yield from one_torch_thread()


class RunningSystem:
    """Broker, verifier, generator and learner hosts on an event loop in a thread; they keep serving /metrics
    after the learner's last step, until close()."""

    def __init__(self, config, policy: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.config, self.policy = config, policy
        self.running = None

    def call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self):
        rng = random.Random(0)
        prompts = prompts_from_records([math_task(rng, 1) for _ in range(50)])
        self.running = await start_system(self.config, prompts, self.policy, STEPS)
        self.learner = self.running.learner
        self.endpoints = list(self.running.endpoints.values())

    async def close(self):
        if self.running is not None:
            await stop_system(self.running)


@pytest.fixture(scope="module")
def system(tmp_path_factory, policy_dir):  # noqa: F811
    running = RunningSystem(short_config(tmp_path_factory.mktemp("monitoring")), str(policy_dir))
    try:
        running.call(running.start(), 120)
        running.call(running.learner.wait(), 240)
        yield running
    finally:
        running.call(running.close(), 60)
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(10)


def scraped_names(port: int) -> set[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_metric_the_dashboard_and_rules_use_is_exported(system):
    exported = set().union(*(scraped_names(e.metrics_port) for e in system.endpoints))
    used = used_metric_names()
    assert len(used) >= 30  # the extraction found the queries
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"used by deploy/ but not exported by a running system: {missing}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_config(tmp_path, targets_url: str) -> Path:
    """deploy/prometheus/prometheus.yml with this machine's addresses, and scraping every second."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / path) for path in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["ring-async"]["http_sd_configs"][0].update(url=targets_url, refresh_interval="1s")
    ray_sd = tmp_path / "ray-sd.json"
    ray_sd.write_text("[]")  # no Ray here: the job exists and discovers nothing
    jobs["ray"]["file_sd_configs"][0]["files"] = [str(ray_sd)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    reply = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def test_prometheus_discovers_scrapes_and_answers_a_training_metric(system, tmp_path):
    broker = system.endpoints[0]
    targets_url = f"http://127.0.0.1:{broker.metrics_port}/targets"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen([require_binary("prometheus"), f"--config.file={prometheus_config(tmp_path, targets_url)}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        up, steps = {}, []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                up = {r["metric"]["instance"]: r["value"][1] for r in query(base, 'up{job="ring-async"}')}
                steps = query(base, "ring_async_learner_steps_total")
            except OSError:  # not listening yet
                pass
            if len(up) == 4 and steps:
                break
            time.sleep(0.5)
        # Discovered through /targets, labelled with the actor ids (honor_labels keeps them on the metrics too).
        assert up == {"broker": "1", "verifier-0": "1", "generator-0": "1", "learner-0": "1"}, up
        (series,) = steps
        assert series["metric"]["role"] == "learner" and series["metric"]["instance"] == "learner-0"
        assert float(series["value"][1]) >= 1
        time.sleep(3)  # a few rule evaluations over real series
        rules = json.loads(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10).read())["data"]["groups"]
        assert {g["name"] for g in rules} == {"ring-async-throughput", "ring-async-verdicts", "ring-async-staleness",
                                              "ring-async-alerts"}
        for group in rules:
            for rule in group["rules"]:
                assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert query(base, "ring_async:generator_version_lag")  # a recording rule over the scraped series
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
