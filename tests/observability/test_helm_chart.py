"""The Helm chart, rendered by the real helm: lint, strict Kubernetes schemas, security settings, RBAC, values schema.

Core kinds are validated with kubernetes-validate (strict) for Kubernetes 1.29 and 1.35; custom resources (the
ClusterKopfPeering, the example AgentCaches) against their CRD's openAPIV3Schema with jsonschema. The
PrometheusRule's rules go through promtool in test_alert_rules.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from agent_cache_operator.bundle import DEFAULT_THRESHOLDS
from agent_cache_operator.crd import build_crd
from tests.observability.conftest import ALL_FEATURES, CHART, ROOT, render

K8S_VERSIONS = ("1.29", "1.35")
# Kinds whose schema is a CRD, not part of Kubernetes: checked against their CRD or with promtool instead.
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering", "ServiceMonitor", "PrometheusRule", "AgentCache"}


def _crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


@pytest.mark.parametrize("features", [[], ALL_FEATURES], ids=["defaults", "every-feature"])
def test_helm_lint_strict(helm: Any, features: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *features)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("rendered", ["default_render", "full_render"])
def test_every_rendered_object_passes_strict_kubernetes_schemas(
    rendered: str, version: str, request: pytest.FixtureRequest
) -> None:
    docs: list[dict[str, Any]] = request.getfixturevalue(rendered)
    crds = {doc["spec"]["names"]["kind"]: doc for doc in _by_kind(docs, "CustomResourceDefinition")}
    checked = set()
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            if doc["kind"] in crds:
                jsonschema.validate(doc, _crd_schema(crds[doc["kind"]]))
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked.add(doc["kind"])
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"} <= checked
    assert "CustomResourceDefinition" in checked


def test_defaults_render_the_operator_and_its_crds_only(default_render: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in default_render)
    assert kinds == sorted(
        [
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Service",
            "ServiceAccount",
        ]
    )


def test_every_feature_adds_monitoring_with_the_release_label(full_render: list[dict[str, Any]]) -> None:
    (monitor,) = _by_kind(full_render, "ServiceMonitor")
    (rule,) = _by_kind(full_render, "PrometheusRule")
    (dashboards,) = [d for d in _by_kind(full_render, "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["labels"]["team"] == "platform"
    assert sorted(dashboards["data"]) == [
        "agent-cache-operator.json",
        "agent-cache-overview.json",
        "agent-cache-tools.json",
    ]
    for name, text in dashboards["data"].items():
        assert json.loads(text) == json.loads((ROOT / "dashboards" / name).read_text())
    groups = {g["name"]: g for g in rule["spec"]["groups"]}
    assert set(groups) == {"agent-cache-operator.alerts", "agent-cache.rules", "agent-cache.alerts"}
    assert "AgentCacheNoTraffic" in {r.get("alert") for r in groups["agent-cache.alerts"]["rules"]}


def test_crd_is_the_operators_and_can_be_left_out(helm: Any, default_render: list[dict[str, Any]]) -> None:
    crds = {doc["metadata"]["name"]: doc for doc in _by_kind(default_render, "CustomResourceDefinition")}
    agentcaches = crds["agentcaches.agentcache.dev"]
    assert agentcaches["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    del agentcaches["metadata"]["annotations"]
    assert agentcaches == build_crd()
    without = render(helm, "--set", "crds.install=false", include_crds=False)
    assert not _by_kind(without, "CustomResourceDefinition")


def test_deployment_is_locked_down(full_render: list[dict[str, Any]]) -> None:
    (deployment,) = _by_kind(full_render, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["command"] == ["agent-cache-operator"]
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/healthz" and ports[probe["port"]] == 8080
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AGENT_CACHE_OPERATOR_LIVENESS_PORT"] == "8080"
    assert env["AGENT_CACHE_OPERATOR_METRICS_PORT"] == str(ports["metrics"])
    assert env["AGENT_CACHE_OPERATOR_PEERING"] == "agent-cache-operator"
    assert env["AGENT_CACHE_OPERATOR_PRIORITY"] == "auto"  # distinct per replica: the oldest works
    assert deployment["spec"]["replicas"] == 2


def test_the_operator_reads_the_environment_the_chart_sets(full_render: list[dict[str, Any]]) -> None:
    pytest.importorskip("kopf")
    from agent_cache_operator.cli import ENV_PREFIX, parser

    (deployment,) = _by_kind(full_render, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    options = {a.dest for a in parser()._actions}
    for name in env:
        if name.startswith(ENV_PREFIX):
            assert name.removeprefix(ENV_PREFIX).lower().replace("_", "") in {o.replace("_", "") for o in options}, name


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


# What the operator does in a namespace it watches, verb by verb (kube.py, Kopf's watch/patch/events); nothing else.
NAMESPACE_GRANTS = {
    ("agentcache.dev", "agentcaches"): {"list", "watch", "patch"},
    ("agentcache.dev", "agentcaches/status"): {"patch"},
    ("agentcache.dev", "agentcaches/finalizers"): {"update"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get"},
    ("", "configmaps"): {"get", "create", "patch", "delete"},
    ("monitoring.coreos.com", "prometheusrules"): {"get", "create", "patch", "delete"},
    ("grafana.integreatly.org", "grafanadashboards"): {"get", "create", "patch", "delete"},
}
CRD_OBSERVATION = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}


def test_rbac_is_least_privilege(default_render: list[dict[str, Any]]) -> None:
    (role,) = _by_kind(default_render, "ClusterRole")
    assert _grants(role) == NAMESPACE_GRANTS | CRD_OBSERVATION | {
        ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"}
    }
    assert not _by_kind(default_render, "Role")


def test_watching_named_namespaces_grants_roles_there_only(helm: Any) -> None:
    docs = render(helm, "--set", "watchNamespaces={team-a,team-b}")
    (cluster_role,) = _by_kind(docs, "ClusterRole")
    # Cluster-wide, only Kopf's observation of CRDs and namespaces: no Secret outside the named namespaces.
    assert _grants(cluster_role) == CRD_OBSERVATION | {("", "namespaces"): {"list", "watch"}}
    roles = {role["metadata"]["namespace"]: role for role in _by_kind(docs, "Role")}
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        assert _grants(role) == NAMESPACE_GRANTS | {("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"}}
    bindings = {binding["metadata"]["namespace"]: binding for binding in _by_kind(docs, "RoleBinding")}
    assert set(bindings) == {"team-a", "team-b"}
    (account,) = _by_kind(docs, "ServiceAccount")
    for namespace, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[namespace]["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "agent-cache-system"}
        ]
    for version in K8S_VERSIONS:
        for doc in _by_kind(docs, "Role") + _by_kind(docs, "RoleBinding"):
            kubernetes_validate.validate(doc, version, strict=True)
    # Without peering there is no peering grant; without RBAC, no RBAC object at all.
    unpeered = render(helm, "--set", "watchNamespaces={team-a}", "--set", "peering.enabled=false")
    (role,) = _by_kind(unpeered, "Role")
    assert _grants(role) == NAMESPACE_GRANTS
    none = render(helm, "--set", "watchNamespaces={team-a}", "--set", "rbac.create=false")
    assert not [doc for doc in none if doc["kind"] in {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}]


def test_watch_namespaces_must_be_namespace_names(helm: Any) -> None:
    for bad in ("team-*", "Team_A"):
        result = helm("template", "x", str(CHART), "--set", f"watchNamespaces={{{bad}}}", check=False)
        assert result.returncode != 0 and "watchNamespaces" in result.stderr, bad


def test_values_schema_rejects_bad_values(helm: Any) -> None:
    bad = helm("template", "x", str(CHART), "--set", "prometheusRule.thresholds.llmHitRateMin=-1", check=False)
    assert bad.returncode != 0 and "llmHitRateMin" in bad.stderr
    unknown = helm("template", "x", str(CHART), "--set", "prometheusRule.thresholdz.x=1", check=False)
    assert unknown.returncode != 0


def test_chart_threshold_defaults_are_the_operators() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["prometheusRule"]["thresholds"] == DEFAULT_THRESHOLDS
    crd_thresholds = _crd_schema(build_crd())["properties"]["spec"]["properties"]["monitoring"]["properties"]["alerts"][
        "properties"
    ]["thresholds"]["properties"]
    assert {key: spec["default"] for key, spec in crd_thresholds.items()} == DEFAULT_THRESHOLDS


@pytest.mark.parametrize("example", sorted((ROOT / "manifests" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_agentcaches_validate_against_the_crd(example: Path) -> None:
    from agent_cache_operator.crd import apply_defaults

    schema = _crd_schema(build_crd())
    (resource,) = [doc for doc in yaml.safe_load_all(example.read_text()) if doc]
    jsonschema.validate(resource, schema)
    jsonschema.validate(apply_defaults(schema, resource), schema)


def test_plain_manifests_validate_and_match_the_chart() -> None:
    docs = [
        doc
        for name in ("crds.yaml", "operator.yaml")
        for doc in yaml.safe_load_all((ROOT / "manifests" / name).read_text())
        if doc
    ]
    assert {doc["kind"] for doc in docs} >= {"Namespace", "CustomResourceDefinition", "Deployment", "ClusterRole"}
    for version in K8S_VERSIONS:
        for doc in docs:
            if doc["kind"] not in CUSTOM_KINDS:
                kubernetes_validate.validate(doc, version, strict=True)


def _operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = _by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_replicas_get_distinct_priorities_or_the_chart_refuses(helm: Any) -> None:
    pytest.importorskip("kopf")
    from agent_cache_operator.cli import parser

    # Equal priorities pause every replica (Kopf peering): several replicas need priority auto, and peering.
    same = helm("template", "x", str(CHART), "--set", "replicaCount=2", "--set", "peering.priority=10", check=False)
    assert same.returncode != 0 and "peering.priority=10 with replicaCount 2" in same.stderr
    unpeered = helm(
        "template", "x", str(CHART), "--set", "replicaCount=3", "--set", "peering.enabled=false", check=False
    )
    assert unpeered.returncode != 0 and "needs peering.enabled=true" in unpeered.stderr
    assert helm("template", "x", str(CHART), "--set", "peering.priority=auto", check=False).returncode == 0
    bad = helm("template", "x", str(CHART), "--set", "peering.priority=high", check=False)
    assert bad.returncode != 0 and "priority" in bad.stderr
    # One replica may outrank other operators with an explicit priority; the operator reads what the chart sets.
    single = _operator_env(render(helm, "--set", "peering.priority=10"))
    for env, expected in ((single, 10), (_operator_env(render(helm, "--set", "replicaCount=2")), None)):
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            assert parser().parse_args([]).priority == expected
    # A standby's takeover after a replica is killed outright waits for the chart's peering.lifetime.
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _operator_env(render(helm, "--set", "peering.lifetime=15")).items():
            patch.setenv(name, value)
        assert parser().parse_args([]).peering_lifetime == 15


def test_watch_namespaces_run_the_operator_there_with_a_peering_in_each(helm: Any) -> None:
    pytest.importorskip("kopf")
    from agent_cache_operator.cli import parser

    docs = render(helm, "--set", "watchNamespaces={team-a,team-b}", "--set", "replicaCount=2")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _operator_env(docs).items():
            patch.setenv(name, value)
        args = parser().parse_args([])
    assert args.namespace == ["team-a", "team-b"] and not args.all_namespaces
    # An operator started with --namespace peers through a KopfPeering in each namespace (Kopf's namespaced mode).
    peerings = {doc["metadata"]["namespace"]: doc for doc in _by_kind(docs, "KopfPeering")}
    assert set(peerings) == {"team-a", "team-b"}
    assert {doc["metadata"]["name"] for doc in peerings.values()} == {args.peering}
    assert not _by_kind(docs, "ClusterKopfPeering")
    crds = {doc["spec"]["names"]["kind"]: doc for doc in _by_kind(docs, "CustomResourceDefinition")}
    assert crds["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for peering in peerings.values():
        jsonschema.validate(peering, _crd_schema(crds["KopfPeering"]))
    # Without watchNamespaces the operator watches every namespace and peers cluster-wide.
    everywhere = render(helm)
    assert "AGENT_CACHE_OPERATOR_NAMESPACES" not in _operator_env(everywhere)
    assert len(_by_kind(everywhere, "ClusterKopfPeering")) == 1 and not _by_kind(everywhere, "KopfPeering")
