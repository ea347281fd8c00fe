"""``manifests/``: the plain-YAML install, rendered from the chart with ``helm template``, and example AgentCaches."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from agent_cache_operator.bundle import DEFAULT_THRESHOLDS
from agent_cache_operator.crd import API_VERSION, KIND

from .chart import CHART
from .formats import ROOT, YAML_HEADER, to_yaml

NAMESPACE = "agent-cache-system"
RELEASE = "agent-cache-operator"


def find_helm() -> str:
    for candidate in (shutil.which("helm"), ROOT / ".venv" / "bin" / "helm"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit("helm not found: run scripts/install-k8s-tools.sh (installs helm and kubectl into .venv/bin)")


def helm_env(home: str) -> dict[str, str]:
    return {
        **os.environ,
        "HELM_CACHE_HOME": f"{home}/cache",
        "HELM_CONFIG_HOME": f"{home}/config",
        "HELM_DATA_HOME": f"{home}/data",
    }


def render_chart(chart_files: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart as it will be once ``chart_files`` are written (so --check needs no write)."""
    with tempfile.TemporaryDirectory() as tmp:
        chart_dir = Path(tmp) / "chart"
        shutil.copytree(ROOT / CHART, chart_dir)
        for relative, content in chart_files.items():
            target = chart_dir / Path(relative).relative_to(CHART)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        result = subprocess.run(
            [find_helm(), "template", RELEASE, str(chart_dir), "--namespace", NAMESPACE, *args],
            capture_output=True,
            text=True,
            env=helm_env(tmp),
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"helm template failed:\n{result.stderr}")
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _plain(document: dict[str, Any]) -> dict[str, Any]:
    labels = document.get("metadata", {}).get("labels", {})
    if labels.get("app.kubernetes.io/managed-by") == "Helm":
        labels["app.kubernetes.io/managed-by"] = "kubectl"
    return document


def files(chart_files: dict[str, str]) -> dict[str, str]:
    documents = [_plain(doc) for doc in render_chart(chart_files, "--include-crds")]
    crds = [doc for doc in documents if doc["kind"] == "CustomResourceDefinition"]
    rest = [doc for doc in documents if doc["kind"] != "CustomResourceDefinition"]
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    note = "# kubectl apply --server-side -f manifests/   (rendered from charts/agent-cache-operator, default values)\n"
    return {
        "manifests/crds.yaml": YAML_HEADER + note + "---\n".join(to_yaml(doc) for doc in crds),
        "manifests/operator.yaml": YAML_HEADER + note + "---\n".join(to_yaml(doc) for doc in [namespace, *rest]),
        "manifests/examples/agentcache-minimal.yaml": YAML_HEADER + to_yaml(minimal_example()),
        "manifests/examples/agentcache-complete.yaml": YAML_HEADER + to_yaml(complete_example()),
    }


def minimal_example() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "support-bot", "namespace": "default"},
        "spec": {"valkey": {"url": "valkey://valkey.default.svc:6379"}},
    }


def complete_example() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "support-bot", "namespace": "shop"},
        "spec": {
            "prefix": "support_bot",
            "valkey": {
                "host": "valkey.shop.svc",
                "port": 6379,
                "db": 0,
                "cluster": False,
                "usernameSecretRef": {"name": "valkey-auth", "key": "username"},
                "passwordSecretRef": {"name": "valkey-auth", "key": "password"},
                "tls": {"enabled": True, "caSecretRef": {"name": "valkey-tls", "key": "ca.crt"}},
            },
            "defaultTTL": 3600,
            "tiers": {"llm": {"ttl": 86400}, "tool": {"ttl": 600}, "session": {"ttl": 1800}},
            "toolPolicies": {
                "get_weather": {"ttl": 600},
                "search_web": {"ttl": 300},
                "send_email": {"cacheable": False},
            },
            "costOverrides": {"gpt-4o": {"inputPer1k": 0.0025, "outputPer1k": 0.01}},
            "monitoring": {
                "dashboards": {
                    "enabled": True,
                    "grafanaOperator": "auto",
                    "instanceSelector": {"matchLabels": {"dashboards": "grafana"}},
                    "labels": {"team": "support"},
                },
                "alerts": {
                    "enabled": True,
                    "labels": {"release": "kube-prometheus-stack"},
                    "thresholds": {**DEFAULT_THRESHOLDS, "llmHitRateMin": 0.3, "expectedMinRequestsPerSecond": 0.5},
                },
            },
            "deletionPolicy": "Retain",
        },
    }
