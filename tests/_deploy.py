"""What the deploy tests share: where deploy/ is, the binaries they run for real, the metric names deploy/ uses."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ring-async.json"

# A metric of the system: ring_async_ then name characters. Recording-rule outputs (ring_async:...) do not match.
METRIC_NAME = re.compile(r"\bring_async_[A-Za-z0-9_]+")


def require_binary(name: str) -> str:
    """The path of ``name``; a failure (not a skip) when it is missing: `make test` installs it (ensure-debs.sh)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `bash scripts/ensure-debs.sh` (Debian package prometheus), "
                    f"which `make test` does first")
    return path


def rule_groups() -> list[dict]:
    return [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]


def rule_exprs() -> dict[str, str]:
    """Each rule's name (record or alert) -> its PromQL expression."""
    return {rule.get("alert") or rule["record"]: rule["expr"] for group in rule_groups() for rule in group["rules"]}


def panel_exprs() -> dict[str, list[str]]:
    """Each dashboard panel's title -> the PromQL of its targets."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in panels if p["type"] != "row"}


def used_metric_names() -> dict[str, set[str]]:
    """Every ring_async_* metric a rule or a panel reads -> where (rule or panel names)."""
    used: dict[str, set[str]] = {}
    sources = [(f"rule {name}", expr) for name, expr in rule_exprs().items()]
    sources += [(f"panel {title!r}", expr) for title, exprs in panel_exprs().items() for expr in exprs]
    for where, expr in sources:
        for name in METRIC_NAME.findall(expr):
            used.setdefault(name, set()).add(where)
    return used
