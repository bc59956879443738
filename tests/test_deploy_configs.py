"""deploy/ parses and holds together: Prometheus config and rules (promtool, with unit tests of every alert), the
KubeRay and Prometheus-operator manifests, the Dockerfiles, the Ray cluster config and the Grafana dashboard.

No cluster, kubectl or docker daemon here: the Kubernetes and Docker checks are structural, and they tie the files to
the code (CLI options, config keys, the launcher's role resources, the Control token variable)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
import yaml

from _deploy import DASHBOARD, DEPLOY, ROOT, RULE_FILES, require_binary, rule_groups
from ring_async.cli import build_parser
from ring_async.commands.run_cmd import CONTROL_TOKEN_ENV
from ring_async.config import load_config
from ring_async.system.launcher import _role_resources

PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "kubernetes"
ROLES_WITH_GROUPS = ("generator", "learner", "verifier")  # the roles the launcher pins by ring_async_<role>


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess:
    out = subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


# ------------------------------------------------------------------------------------------------- Prometheus

def test_promtool_accepts_the_scrape_config_and_the_rules():
    promtool("check", "config", "prometheus.yml")
    out = promtool("check", "rules", *(str(p) for p in RULE_FILES))
    assert out.stdout.count("SUCCESS") == len(RULE_FILES)


def test_every_alert_fires_on_its_problem_and_stays_quiet_when_healthy():
    tests = yaml.safe_load((PROM / "tests" / "alerts_test.yml").read_text())
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    fired, quiet = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts == fired, f"alerts without a firing test: {alerts - fired}"
    assert alerts == quiet, f"alerts without a quiet test: {alerts - quiet}"
    promtool("test", "rules", "tests/alerts_test.yml")


def test_the_rules_have_the_labels_and_annotations_alertmanager_routes_on():
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                assert rule["annotations"]["summary"], rule["alert"]
                assert rule["alert"].startswith("RingAsync"), rule["alert"]
            else:
                assert rule["record"].startswith("ring_async:"), rule["record"]


def test_the_scrape_config_discovers_roles_through_the_broker_and_ray_through_its_file():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    roles = jobs["ring-async"]
    assert roles["honor_labels"] is True  # our instance label (the actor id) wins over host:port
    url = urlparse(roles["http_sd_configs"][0]["url"])
    assert url.path == "/targets" and url.port == serve_option("--metrics-port", rayjob_serve_args())
    assert jobs["ray"]["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    assert jobs["prometheus"]["static_configs"][0]["targets"]
    for path in config["rule_files"]:
        assert (PROM / path).is_file(), path


# ------------------------------------------------------------------------------------------------- Kubernetes

def k8s_docs() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), path
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def one(kind: str) -> dict:
    hits = [doc for (k, _), doc in k8s_docs().items() if k == kind]
    assert len(hits) == 1, f"{kind}: {len(hits)} documents"
    return hits[0]


def pod_templates() -> dict[str, dict]:
    """RayCluster group name -> its pod template ('head' for the head group)."""
    spec = one("RayCluster")["spec"]
    groups = {"head": spec["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in spec["workerGroupSpecs"]})
    return groups


def rayjob_serve_args():
    entrypoint = shlex.split(one("RayJob")["spec"]["entrypoint"])
    assert entrypoint[:2] == ["ring-async", "serve"], entrypoint
    return build_parser().parse_args(entrypoint[1:])  # the real CLI parser: every option must exist


def serve_option(flag: str, args) -> int:
    return getattr(args, flag.lstrip("-").replace("-", "_"))


def test_every_manifest_is_named_namespaced_and_applied_by_the_kustomization():
    docs = k8s_docs()
    for (kind, name), doc in docs.items():
        if kind != "Namespace":
            assert doc["metadata"].get("namespace") == "ring-async", (kind, name)
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert listed[0] == "namespace.yaml"


def test_every_ray_group_requests_and_limits_its_resources():
    for group, spec in pod_templates().items():
        for container in spec["template"]["spec"]["containers"]:
            res = container["resources"]
            for key in ("cpu", "memory"):
                assert res["requests"][key] == res["limits"][key], (group, key)  # guaranteed QoS: never evicted first
            gpus = res["limits"].get("nvidia.com/gpu")
            assert (gpus is not None) == (group in ("generator", "learner")), group
            assert res["requests"].get("nvidia.com/gpu") == gpus, group
            assert {"name": "metrics", "containerPort": 8080} in container["ports"], group  # Ray's metrics
        assert spec["rayStartParams"]["metrics-export-port"] == "8080", group


def test_worker_groups_advertise_the_resources_the_launcher_pins_roles_by():
    groups = pod_templates()
    assert groups["head"]["rayStartParams"]["num-cpus"] == "0"
    assert set(groups) - {"head"} == set(ROLES_WITH_GROUPS)
    for role in ROLES_WITH_GROUPS:
        advertised = json.loads(json.loads(groups[role]["rayStartParams"]["resources"]))  # KubeRay's quoted JSON
        fake_ray = SimpleNamespace(cluster_resources=lambda: advertised)
        assert _role_resources(fake_ray, role) == {f"ring_async_{role}": 1.0}, role


def test_the_sandbox_group_gets_what_bubblewrap_needs_from_the_node():
    pod = pod_templates()["verifier"]["template"]["spec"]
    assert pod["hostUsers"] is False
    security = pod["containers"][0]["securityContext"]
    assert security["seccompProfile"] == {"type": "Unconfined"}
    assert security["appArmorProfile"] == {"type": "Unconfined"}
    assert security["procMount"] == "Unmasked"
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security


def test_the_control_token_comes_from_the_secret():
    secret = one("Secret")
    env = {e["name"]: e for e in pod_templates()["head"]["template"]["spec"]["containers"][0]["env"]}
    ref = env[CONTROL_TOKEN_ENV]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert CONTROL_TOKEN_ENV not in one("RayJob")["spec"]["entrypoint"]  # never on a command line


def test_services_select_the_head_and_match_the_ports_the_service_is_started_with():
    head = pod_templates()["head"]["template"]
    ports = {p["name"]: p["containerPort"] for p in head["spec"]["containers"][0]["ports"]}
    args = rayjob_serve_args()
    expected = {"ring-async-control": serve_option("--control-port", args),
                "ring-async-metrics": serve_option("--metrics-port", args)}
    for name, port in expected.items():
        service = k8s_docs()[("Service", name)]
        assert service["spec"]["selector"].items() <= head["metadata"]["labels"].items(), name
        (svc_port,) = service["spec"]["ports"]
        assert ports[svc_port["targetPort"]] == svc_port["port"] == port, name


def test_the_job_runs_on_the_cluster_with_the_mounted_config(tmp_path):
    cluster, job = one("RayCluster"), one("RayJob")
    assert job["spec"]["clusterSelector"].items() <= cluster["metadata"]["labels"].items()
    args = rayjob_serve_args()
    assert args.address == "auto"  # inside a Ray job: connect to the cluster, do not start one
    # Ray's default 3 s between SIGTERM and SIGKILL would cut the final checkpoint (the launcher allows 600 s).
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert int(runtime_env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) > 600
    assert '"RAY_JOB_STOP_WAIT_TIME_S": "900"' in (DEPLOY / "ray" / "submit.sh").read_text()
    config_map = one("ConfigMap")
    mounts = {m["name"]: m["mountPath"] for m in pod_templates()["head"]["template"]["spec"]["containers"][0]
              ["volumeMounts"]}
    (key,) = config_map["data"]
    assert args.config == f"{mounts['config']}/{key}"
    service_config = config_map["data"][key]
    assert yaml.safe_load(service_config) == yaml.safe_load((DEPLOY / "ray" / "service.yaml").read_text())
    path = tmp_path / key
    path.write_text(service_config)
    config = load_config(path)  # every key exists and every value is valid
    assert config.run.run_dir.startswith(mounts["shared"])


def test_every_volume_mount_has_its_volume_and_the_claim_exists():
    claim = one("PersistentVolumeClaim")["metadata"]["name"]
    config_map = one("ConfigMap")["metadata"]["name"]
    for group, spec in pod_templates().items():
        pod = spec["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes, (group, mount["name"])
        assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == claim, group
        assert volumes["config"]["configMap"]["name"] == config_map, group


def test_prometheus_operator_objects_find_the_roles_and_the_ray_pods():
    scrape = one("ScrapeConfig")["spec"]
    assert scrape["honorLabels"] is True
    url = urlparse(scrape["httpSDConfigs"][0]["url"])
    service = k8s_docs()[("Service", "ring-async-metrics")]
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert url.port == service["spec"]["ports"][0]["port"] and url.path == "/targets"
    monitor = one("PodMonitor")["spec"]
    (endpoint,) = monitor["podMetricsEndpoints"]
    for group, spec in pod_templates().items():
        labels = spec["template"]["metadata"]["labels"]
        assert monitor["selector"]["matchLabels"].items() <= labels.items(), group
        assert endpoint["port"] in {p["name"] for c in spec["template"]["spec"]["containers"] for p in c["ports"]}


def test_the_prometheus_rule_object_holds_exactly_the_rule_files(tmp_path):
    groups = one("PrometheusRule")["spec"]["groups"]
    by_name = {g["name"]: g for g in groups}
    assert len(by_name) == len(groups) and by_name == {g["name"]: g for g in rule_groups()}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    promtool("check", "rules", str(tmp_path / "rules.yml"))


# ------------------------------------------------------------------------------------------------- Docker

def dockerfile(name: str) -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "docker" / name).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_images_install_from_the_project_pins_as_a_non_root_user(name):
    steps = dockerfile(name)
    base = steps[0]
    assert base[0] == "FROM" and ":" in base[1] and not base[1].endswith(":latest"), base  # pinned by tag
    first_pip = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "pip install" in args)
    copied = [args.split()[0] for op, args in steps[:first_pip] if op == "COPY"]
    assert "constraints.txt" in copied, "constraints.txt must be copied before the first pip install"
    for op, args in steps:
        if op == "RUN" and "pip install" in args:
            for command in args.split("&&"):
                if "pip install" in command:
                    assert "-c constraints.txt" in command, command
        if op == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    assert any(op == "RUN" and "apt-get install" in args and "bubblewrap" in args for op, args in steps)
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_run = max(i for i, (op, _) in enumerate(steps) if op == "RUN" and "pip install" in _)
    assert max(i for i, (op, _) in enumerate(steps) if op == "USER") > last_run
    (entrypoint,) = [json.loads(args) for op, args in steps if op == "ENTRYPOINT"]
    assert entrypoint == ["ring-async"]


def test_the_cuda_image_installs_the_vllm_extra_of_pyproject():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "vllm" in extras
    assert any(op == "RUN" and '".[vllm]"' in args for op, args in dockerfile("Dockerfile.cuda"))
    # Every node of a Ray cluster needs the same Python minor version: both images run 3.11.
    assert dockerfile("Dockerfile.cpu")[0][1].startswith("python:3.11")
    assert "python3.11 -m venv" in (DEPLOY / "docker" / "Dockerfile.cuda").read_text()


# ------------------------------------------------------------------------------------------------- Ray, Grafana

def test_the_ray_cluster_config_gives_each_role_its_node_group():
    cluster = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text())
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}
    for role in ROLES_WITH_GROUPS:
        resources = types[role]["resources"]
        assert _role_resources(SimpleNamespace(cluster_resources=lambda: resources), role), role
        assert ("GPU" in resources) == (role in ("generator", "learner")), role
    for source in cluster["file_mounts"].values():
        assert (ROOT / source).exists(), source
    assert any("--metrics-export-port=8080" in cmd for cmd in cluster["head_start_ray_commands"])


def test_the_ray_job_script_starts_serve_with_options_that_exist():
    script = (DEPLOY / "ray" / "submit.sh").read_text()
    subprocess.run(["bash", "-n", str(DEPLOY / "ray" / "submit.sh")], check=True)
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    known = {flag for action in serve._actions for flag in action.option_strings}
    used = set(re.findall(r"(--[a-z][a-z-]+)", script.split("ring-async serve", 1)[1]))
    assert used <= known, used - known
    assert {"--address", "--config", "--control-port", "--metrics-port"} <= used


def test_the_dashboard_is_provisionable_and_every_panel_queries_the_chosen_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "ring-async.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("tokens per second", "reward", "accuracy", "entropy", "gradient norm", "loss tokens",
                  "staleness", "verdicts", "latency", "queues", "up", "policy version"):
        assert topic in titles, topic
