"""The objects deployed per cache — dashboards ConfigMap, GrafanaDashboards, PrometheusRule — as pure functions.

``plan_monitoring`` decides what should exist (and what must go) from the spec and the CRDs the cluster serves, and
what the DashboardsReady/AlertsReady conditions will say once that is applied. The dashboard JSON and the rule groups
come from the observability bundle (``agent_cache_operator.bundle``), passed in as :class:`Bundle` so that this stays
testable with stand-ins. ``update_patch`` computes the merge patch that brings an existing child to its desired state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .crd import API_VERSION, KIND
from .kube import CONFIG_MAP, GRAFANA_DASHBOARD, PROMETHEUS_RULE, ApiKind
from .spec import AgentCacheSpec
from .status import Condition

MANAGED_BY = "agent-cache-operator"
NAME_LABEL = "agentcache.dev/name"
MANAGED_LABELS_ANNOTATION = "agentcache.dev/managed-labels"
GRAFANA_FOLDER = "Agent Cache"

DashboardFiles = Callable[[str], Mapping[str, str]]
RuleGroups = Callable[[str, str, Mapping[str, float]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Bundle:
    """The observability bundle's two entry points (see ``agent_cache_operator.bundle``)."""

    dashboard_files: DashboardFiles
    prometheus_rule_groups: RuleGroups


def default_bundle() -> Bundle:
    from . import bundle

    return Bundle(bundle.dashboard_files, bundle.prometheus_rule_groups)


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Child:
    kind: ApiKind
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class MonitoringPlan:
    desired: list[Child] = field(default_factory=list)
    absent: list[tuple[ApiKind, str]] = field(default_factory=list)
    dashboards: Condition | None = None
    alerts: Condition | None = None
    complete: bool = False
    """Whether ``desired``/``absent`` are the full picture (not after a discovery or bundle failure)."""

    def status(self) -> dict[str, Any]:
        """``status.monitoring``: the children that will exist."""
        status: dict[str, Any] = {}
        dashboards = [c.name for c in self.desired if c.kind == GRAFANA_DASHBOARD]
        for child in self.desired:
            if child.kind == CONFIG_MAP:
                status["dashboardsConfigMap"] = child.name
            elif child.kind == PROMETHEUS_RULE:
                status["prometheusRule"] = child.name
        if dashboards:
            status["grafanaDashboards"] = dashboards
        return status


def child_name(owner: str, suffix: str) -> str:
    """A DNS-1123 name ``agentcache-<owner>-<suffix>``, shortened with a hash when too long."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"agentcache-{owner}-{suffix}".lower()).strip("-.")
    if len(name) > 253:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:242].rstrip('-.')}-{digest}"
    return name


def _labels(owner: Owner, extra: Mapping[str, str], component: str) -> dict[str, str]:
    return {
        **extra,
        "app.kubernetes.io/name": "agent-cache",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        NAME_LABEL: owner.name[:63],
    }


def _metadata(owner: Owner, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "annotations": {MANAGED_LABELS_ANNOTATION: ",".join(sorted(labels))},
        "ownerReferences": [owner.reference()],
    }


def dashboards_config_map(owner: Owner, prefix: str, files: Mapping[str, str], labels: Mapping[str, str]) -> Child:
    all_labels = {**_labels(owner, labels, "dashboards"), "grafana_dashboard": "1"}
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, child_name(owner.name, "dashboards"), all_labels),
        "data": dict(sorted(files.items())),
    }
    manifest["metadata"]["annotations"]["agentcache.dev/prefix"] = prefix
    return Child(CONFIG_MAP, manifest)


def grafana_dashboards(owner: Owner, files: Mapping[str, str], spec: AgentCacheSpec) -> list[Child]:
    dashboards = spec.dashboards
    children = []
    for file_name, content in sorted(files.items()):
        stem = file_name.rsplit(".", 1)[0]
        manifest = {
            "apiVersion": GRAFANA_DASHBOARD.api_version,
            "kind": GRAFANA_DASHBOARD.kind,
            "metadata": _metadata(owner, child_name(owner.name, stem), _labels(owner, dashboards.labels, "dashboards")),
            "spec": {
                "instanceSelector": dict(dashboards.instance_selector),
                "allowCrossNamespaceImport": dashboards.allow_cross_namespace_import,
                "folder": GRAFANA_FOLDER,
                "json": content,
            },
        }
        children.append(Child(GRAFANA_DASHBOARD, manifest))
    return children


def prometheus_rule(owner: Owner, groups: list[dict[str, Any]], labels: Mapping[str, str]) -> Child:
    manifest = {
        "apiVersion": PROMETHEUS_RULE.api_version,
        "kind": PROMETHEUS_RULE.kind,
        "metadata": _metadata(owner, child_name(owner.name, "alerts"), _labels(owner, labels, "alerts")),
        "spec": {"groups": groups},
    }
    return Child(PROMETHEUS_RULE, manifest)


def plan_monitoring(
    spec: AgentCacheSpec,
    owner: Owner,
    *,
    served: frozenset[ApiKind],
    bundle: Bundle,
    recorded: Mapping[str, Any] | None = None,
) -> MonitoringPlan:
    """What to deploy for ``spec`` given the CRDs the cluster ``served``; ``recorded`` is ``status.monitoring``
    (what a previous pass deployed), so children that are no longer wanted get removed."""
    recorded = recorded or {}
    desired: list[Child] = []
    absent: list[tuple[ApiKind, str]] = []
    recorded_dashboards = [str(n) for n in recorded.get("grafanaDashboards") or []]

    dashboards_spec = spec.dashboards
    if not dashboards_spec.enabled:
        absent.append((CONFIG_MAP, child_name(owner.name, "dashboards")))
        absent += [(GRAFANA_DASHBOARD, name) for name in recorded_dashboards if GRAFANA_DASHBOARD in served]
        dashboards = Condition("DashboardsReady", "True", "Disabled", "spec.monitoring.dashboards.enabled is false")
    else:
        files = bundle.dashboard_files(spec.prefix)
        desired.append(dashboards_config_map(owner, spec.prefix, files, dashboards_spec.labels))
        parts = [f'ConfigMap {child_name(owner.name, "dashboards")} (label grafana_dashboard: "1")']
        dashboards = Condition("DashboardsReady", "True", "Deployed", "")
        use_operator = dashboards_spec.grafana_operator != "disabled" and GRAFANA_DASHBOARD in served
        if use_operator:
            crs = grafana_dashboards(owner, files, spec)
            desired += crs
            parts.append(f"{len(crs)} GrafanaDashboard(s)")
        elif dashboards_spec.grafana_operator == "enabled":
            dashboards = Condition(
                "DashboardsReady",
                "False",
                "GrafanaDashboardCRDMissing",
                f"spec.monitoring.dashboards.grafanaOperator is enabled but {GRAFANA_DASHBOARD.describe()} "
                "is not served by this cluster (install grafana-operator)",
            )
        if GRAFANA_DASHBOARD in served:
            wanted = {c.name for c in desired if c.kind == GRAFANA_DASHBOARD}
            absent += [(GRAFANA_DASHBOARD, name) for name in recorded_dashboards if name not in wanted]
        if dashboards.status == "True":
            dashboards = Condition("DashboardsReady", "True", "Deployed", " and ".join(parts))
        else:
            dashboards = Condition(
                dashboards.type, dashboards.status, dashboards.reason, f"{dashboards.message}; deployed {parts[0]}"
            )

    alerts_spec = spec.alerts
    rule_name = child_name(owner.name, "alerts")
    if not alerts_spec.enabled:
        if PROMETHEUS_RULE in served:
            absent.append((PROMETHEUS_RULE, rule_name))
        alerts = Condition("AlertsReady", "True", "Disabled", "spec.monitoring.alerts.enabled is false")
    elif PROMETHEUS_RULE not in served:
        alerts = Condition(
            "AlertsReady",
            "False",
            "PrometheusRuleCRDMissing",
            f"{PROMETHEUS_RULE.describe()} is not served by this cluster (install prometheus-operator); "
            "no alert rules deployed",
        )
    else:
        groups = bundle.prometheus_rule_groups(spec.prefix, owner.namespace, dict(alerts_spec.thresholds))
        desired.append(prometheus_rule(owner, groups, alerts_spec.labels))
        count = sum(1 for group in groups for rule in group.get("rules", []) if "alert" in rule)
        alerts = Condition("AlertsReady", "True", "Deployed", f"PrometheusRule {rule_name} with {count} alerts")
    return MonitoringPlan(desired=desired, absent=absent, dashboards=dashboards, alerts=alerts, complete=True)


def owned_by(obj: Mapping[str, Any], owner: Owner) -> bool:
    references: Iterable[Mapping[str, Any]] = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid for ref in references)


def update_patch(actual: Mapping[str, Any], desired: Child) -> dict[str, Any] | None:
    """The merge patch from ``actual`` to the desired child, or None when it already matches.

    Labels the operator set before (listed in an annotation) but no longer wants are removed; labels others added
    are left alone. ``data`` and ``spec`` are owned whole: keys absent from the desired state are removed.
    """
    patch: dict[str, Any] = {}
    want_meta = desired.manifest["metadata"]
    have_meta = actual.get("metadata", {})
    have_labels: Mapping[str, str] = have_meta.get("labels") or {}
    have_annotations: Mapping[str, str] = have_meta.get("annotations") or {}
    previously = {k for k in have_annotations.get(MANAGED_LABELS_ANNOTATION, "").split(",") if k}
    labels: dict[str, str | None] = {k: v for k, v in want_meta["labels"].items() if have_labels.get(k) != v}
    labels.update({k: None for k in previously - set(want_meta["labels"]) if k in have_labels})
    annotations = {k: v for k, v in want_meta["annotations"].items() if have_annotations.get(k) != v}
    meta: dict[str, Any] = {}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if meta:
        patch["metadata"] = meta
    for section in ("data", "spec"):
        if section in desired.manifest:
            diff = merge_diff(actual.get(section) or {}, desired.manifest[section])
            if diff:
                patch[section] = diff
    return patch or None


def merge_diff(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386: the merge patch turning ``actual`` into ``desired`` (lists and scalars are replaced whole)."""
    diff: dict[str, Any] = {}
    for key, want in desired.items():
        have = actual.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            nested = merge_diff(have, want)
            if nested:
                diff[key] = nested
        elif key not in actual or have != want:
            diff[key] = want
    for key in actual:
        if key not in desired:
            diff[key] = None
    return diff
