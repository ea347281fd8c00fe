"""Dashboards and alert rules per cache: what gets deployed depends on the CRDs the cluster serves."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent_cache_operator.bundle import dashboard_files
from tests.operator.conftest import Kube, OperatorProcess, agentcache, condition, eventually
from tests.servers import ServerHandle

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]


def stand_in_crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    """A permissive CRD for a third-party kind (the real ones are large; the operator only needs the API)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


PROMETHEUS_RULE_CRD = stand_in_crd("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules")
GRAFANA_DASHBOARD_CRD = stand_in_crd("grafana.integreatly.org", "v1beta1", "GrafanaDashboard", "grafanadashboards")


@pytest.fixture
def monitoring_crds(kube: Kube) -> Iterator[None]:
    """prometheus-operator's and grafana-operator's kinds, installed for one test."""
    existing = kube.kubectl("get", "crd", "prometheusrules.monitoring.coreos.com", check=False)
    if kube.real and existing.returncode == 0:
        pytest.skip("this cluster runs prometheus-operator already; not touching its CRDs")
    for crd in (PROMETHEUS_RULE_CRD, GRAFANA_DASHBOARD_CRD):
        kube.apply(crd)
        kube.kubectl("wait", "--for=condition=established", f"crd/{crd['metadata']['name']}", "--timeout=60s")
    yield
    for crd in (PROMETHEUS_RULE_CRD, GRAFANA_DASHBOARD_CRD):
        kube.kubectl("delete", "crd", crd["metadata"]["name"], "--wait=true", check=False)


async def test_without_prometheus_operator_alerts_are_not_ready_and_say_why(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], valkey_server: ServerHandle
) -> None:
    if kube.real and kube.kubectl("get", "crd", "prometheusrules.monitoring.coreos.com", check=False).returncode == 0:
        pytest.skip("this cluster runs prometheus-operator")
    operator()
    await kube.aapply(agentcache("plain", {"host": valkey_server.host, "port": valkey_server.port}), namespace)

    async def settled() -> dict[str, Any] | None:
        body = await kube.aget("agentcaches", "plain", namespace)
        return body if condition(body, "AlertsReady") and condition(body, "Ready").get("status") == "True" else None

    body = await eventually(settled, what="conditions")
    alerts = condition(body, "AlertsReady")
    assert alerts["status"] == "False" and alerts["reason"] == "PrometheusRuleCRDMissing"
    assert "monitoring.coreos.com/v1" in alerts["message"]
    assert condition(body, "DashboardsReady")["status"] == "True"  # the sidecar ConfigMap needs no CRD
    assert "monitoring incomplete" in condition(body, "Ready")["message"]
    assert body["status"]["observedGeneration"] == condition(body, "AlertsReady")["observedGeneration"]


async def test_with_the_crds_it_deploys_rules_and_grafana_dashboards(
    kube: Kube, namespace: str, monitoring_crds: None, operator: Callable[..., OperatorProcess],
    valkey_server: ServerHandle,
) -> None:  # fmt: skip
    operator()
    resource = agentcache(
        "observed",
        {"host": valkey_server.host, "port": valkey_server.port},
        prefix="obs_cache",
        monitoring={
            "alerts": {"labels": {"release": "kube-prometheus-stack"}, "thresholds": {"llmHitRateMin": 0.5}},
            "dashboards": {"labels": {"team": "ml"}},
        },
    )
    await kube.aapply(resource, namespace)

    async def deployed() -> dict[str, Any] | None:
        body = await kube.aget("agentcaches", "observed", namespace)
        ok = condition(body, "AlertsReady").get("reason") == "Deployed"
        return body if ok and condition(body, "DashboardsReady").get("reason") == "Deployed" else None

    body = await eventually(deployed, what="rules and dashboards deployed")
    uid = body["metadata"]["uid"]

    rule = await kube.aget("prometheusrules", "agentcache-observed-alerts", namespace)
    assert rule is not None
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["ownerReferences"][0]["uid"] == uid
    expressions = json.dumps(rule["spec"]["groups"])
    assert 'cache_name=\\"obs_cache\\"' in expressions and "0.5" in expressions  # the prefix and our threshold
    assert f'namespace=\\"{namespace}\\"' in expressions

    names = body["status"]["monitoring"]["grafanaDashboards"]
    assert len(names) == len(dashboard_files("obs_cache")) >= 1
    for name in names:
        dashboard = await kube.aget("grafanadashboards", name, namespace)
        assert dashboard is not None and dashboard["metadata"]["ownerReferences"][0]["uid"] == uid
        assert json.loads(dashboard["spec"]["json"])["uid"].startswith("agent-cache-")
        assert dashboard["spec"]["instanceSelector"] == {"matchLabels": {"dashboards": "grafana"}}
        assert dashboard["metadata"]["labels"]["team"] == "ml"
    config_map = await kube.aget("configmap", "agentcache-observed-dashboards", namespace)
    assert config_map is not None and set(config_map["data"]) == set(dashboard_files("obs_cache"))

    # Switching alerts off removes the rule; switching the operator mode off removes the GrafanaDashboards.
    await kube.akubectl(
        "patch", "agentcache", "observed", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"monitoring": {"alerts": {"enabled": False},
                                                  "dashboards": {"grafanaOperator": "disabled"}}}}),
    )  # fmt: skip

    async def removed() -> bool:
        body = await kube.aget("agentcaches", "observed", namespace)
        gone = await kube.aget("prometheusrules", "agentcache-observed-alerts", namespace) is None
        return gone and condition(body, "AlertsReady").get("reason") == "Disabled"

    await eventually(removed, what="the PrometheusRule removed")
    for name in names:
        await eventually(lambda name=name: _absent(kube, "grafanadashboards", name, namespace), what=f"{name} removed")
    reasons = {event["reason"] for event in await kube.events(namespace)}
    assert "Deleted" in reasons


async def test_grafana_operator_required_but_missing(
    kube: Kube, namespace: str, operator: Callable[..., OperatorProcess], valkey_server: ServerHandle
) -> None:
    if (
        kube.real
        and kube.kubectl("get", "crd", "grafanadashboards.grafana.integreatly.org", check=False).returncode == 0
    ):
        pytest.skip("this cluster runs grafana-operator")
    operator()
    resource = agentcache(
        "strict",
        {"host": valkey_server.host, "port": valkey_server.port},
        monitoring={"dashboards": {"grafanaOperator": "enabled"}},
    )
    await kube.aapply(resource, namespace)

    async def reported() -> dict[str, Any] | None:
        body = await kube.aget("agentcaches", "strict", namespace)
        return body if condition(body, "DashboardsReady").get("reason") == "GrafanaDashboardCRDMissing" else None

    body = await eventually(reported, what="DashboardsReady=False")
    assert condition(body, "DashboardsReady")["status"] == "False"
    assert condition(body, "Ready")["status"] == "True"  # the config is live all the same


async def _absent(kube: Kube, kind: str, name: str, namespace: str) -> bool:
    return await kube.aget(kind, name, namespace) is None
