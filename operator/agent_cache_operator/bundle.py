"""Per-cache copies of the Grafana dashboards and Prometheus alert rules that the operator deploys.

The dashboards and rules are generated once, from the library's metrics definition
(``agent_cache.telemetry.METRICS``), by ``scripts/generate.py`` and shipped as package data under
``bundle/``: the dashboards are built with grafana-foundation-sdk at build time, so the operator needs no
Grafana SDK at runtime. Here we only template one cache into them: its name into the dashboards' ``cache_name``
variable, its name, namespace and alert thresholds into the rule expressions (placeholders ``${...}``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["DEFAULT_THRESHOLDS", "dashboard_files", "format_number", "prometheus_rule_groups"]

DEFAULT_THRESHOLDS: dict[str, float] = {
    "llmHitRateMin": 0.2,
    "toolHitRateMin": 0.2,
    "toolDisableBelow": 0.1,
    "latencyP99MaxSeconds": 0.05,
    "errorRatioMax": 0.01,
    # Requests per second below which a cache counts as idle; 0 disables the no-traffic alert.
    "expectedMinRequestsPerSecond": 0,
}

_RULES_FILE = "rules.template.json"
_DASHBOARD_SUFFIX = ".dashboard.json"
# A rule carrying this key exists only while the named threshold is above 0.
_ENABLED_IF_POSITIVE = "x-enabled-if-positive"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What a library cache name may be (a PromQL label value carries it unescaped; a ConfigMap key all but its ':').
_CACHE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _bundle_text(name: str) -> str:
    return (resources.files(__package__) / "bundle" / name).read_text(encoding="utf-8")


@cache
def _dashboards() -> dict[str, dict[str, Any]]:
    """Dashboard kind (``overview``, ``tools``) -> generic dashboard model."""
    folder = resources.files(__package__) / "bundle"
    found: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(_DASHBOARD_SUFFIX):
            found[entry.name.removesuffix(_DASHBOARD_SUFFIX)] = json.loads(entry.read_text(encoding="utf-8"))
    return dict(sorted(found.items()))


@cache
def _rule_template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads(_bundle_text(_RULES_FILE))
    return template


def _check_cache_name(cache_name: str) -> None:
    if not _CACHE_NAME.fullmatch(cache_name):
        raise ValueError(f"cache name {cache_name!r} must be 1-200 letters, digits, '_', '.', ':' or '-'")


def dashboard_files(cache_name: str) -> dict[str, str]:
    """File name -> Grafana dashboard JSON for one cache (its ``cache_name`` variable defaults to it).

    File names and dashboard uids include the cache, so the dashboards of several caches can live side by side in
    one Grafana (the sidecar writes every ConfigMap key into one folder).
    """
    _check_cache_name(cache_name)
    digest = hashlib.sha256(cache_name.encode()).hexdigest()[:12]
    # A ConfigMap key cannot hold ':'; the digest keeps myapp:prod apart from a cache named myapp_prod.
    stem = cache_name if ":" not in cache_name else f"{cache_name.replace(':', '_')}-{digest[:8]}"
    files: dict[str, str] = {}
    for kind, generic in _dashboards().items():
        dashboard = copy.deepcopy(generic)
        dashboard["uid"] = f"agent-cache-{kind}-{digest}"
        dashboard["title"] = f"{generic['title']} — {cache_name}"
        dashboard["id"] = None
        dashboard["tags"] = [*generic.get("tags", []), f"cache:{cache_name}"]
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("name") == "cache_name":
                variable["current"] = {"selected": True, "text": cache_name, "value": cache_name}
                variable["options"] = []
        files[f"agent-cache-{stem}-{kind}.json"] = json.dumps(dashboard, indent=2, sort_keys=True) + "\n"
    return files


def _format_threshold(key: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"threshold {key} must be a finite number >= 0, got {value!r}")
    return format_number(float(value))


def format_number(value: float) -> str:
    """A number as Go (and so Helm) prints it: ``1`` not ``1.0``, ``0.05``, ``1e-05``."""
    text = repr(value)
    return text.removesuffix(".0")


def _promql_string(value: str) -> str:
    """``value`` as the inside of a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _substitute(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise KeyError(f"rule template placeholder ${{{key}}} has no value")
            return values[key]

        return _PLACEHOLDER.sub(replace, node)
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _substitute(item, values) for key, item in node.items()}
    return node


def prometheus_rule_groups(cache_name: str, namespace: str, thresholds: Mapping[str, float]) -> list[dict[str, Any]]:
    """The ``spec.groups`` of a PrometheusRule with the alerts of one cache.

    ``thresholds`` overrides ``DEFAULT_THRESHOLDS`` key by key; an unknown key is a ``ValueError`` naming it.
    Expressions select ``namespace="<namespace>", cache_name="<cache_name>"`` (the namespace label is the scraped
    pod's, as prometheus-operator's ServiceMonitor/PodMonitor set it).
    """
    _check_cache_name(cache_name)
    if not _NAMESPACE.fullmatch(namespace) or len(namespace) > 63:
        raise ValueError(f"namespace {namespace!r} is not a valid Kubernetes namespace name")
    unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ValueError(f"unknown alert threshold(s): {', '.join(unknown)} (known: {', '.join(DEFAULT_THRESHOLDS)})")
    merged = {**DEFAULT_THRESHOLDS, **thresholds}
    values = {key: _format_threshold(key, value) for key, value in merged.items()}
    values["cache_name"] = _promql_string(cache_name)
    values["namespace"] = _promql_string(namespace)

    groups: list[dict[str, Any]] = []
    for group in _rule_template()["groups"]:
        rules = []
        for rule in group["rules"]:
            gate = rule.get(_ENABLED_IF_POSITIVE)
            if gate is not None and merged[gate] <= 0:
                continue
            rules.append({key: value for key, value in rule.items() if key != _ENABLED_IF_POSITIVE})
        if rules:
            groups.append(_substitute({**group, "rules": rules}, values))
    return groups
