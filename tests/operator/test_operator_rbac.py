"""The chart's RBAC, enforced: the operator runs with a token the emulator authorizes against the rules ``helm
template`` renders, through a whole life (Secret, children of every kind, update, deletion). It must never be denied,
and it must use every grant (a grant it never uses is privilege it does not need).

Each case has an emulator of its own: a cluster-wide operator would otherwise reconcile every other test's resources.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_cache.embedded import EmbeddedValkey
from agent_cache_operator.crd import build_crd
from tests.operator.conftest import KUBECTL, OPERATOR, Kube, OperatorProcess, agentcache, condition, eventually, secret
from tests.operator.emulator import Authorizer, EmulatorThread, write_kubeconfig
from tests.operator.test_operator_monitoring import GRAFANA_DASHBOARD_CRD, PROMETHEUS_RULE_CRD

pytestmark = [pytest.mark.k8s, pytest.mark.valkey]

TOKEN = "agent-cache-operator-under-rbac"
# Checked by an admission plugin (OwnerReferencesPermissionEnforcement) when a child carries blockOwnerDeletion,
# never requested by the operator itself.
ADMISSION_ONLY = {("update", "agentcache.dev", "agentcaches/finalizers")}


def render(*values: str) -> list[dict[str, Any]]:
    try:
        from scripts.bundle_gen.manifests import render_chart

        return render_chart({}, "--include-crds", *values)
    except SystemExit as exc:  # helm is missing
        pytest.skip(str(exc))


def chart_rules(documents: list[dict[str, Any]]) -> list[tuple[str | None, dict[str, Any]]]:
    """The rules of the chart's ClusterRoles (None: cluster-wide) and Roles (their namespace)."""
    return [
        (doc["metadata"].get("namespace") if doc["kind"] == "Role" else None, rule)
        for doc in documents
        if doc["kind"] in ("ClusterRole", "Role")
        for rule in doc["rules"]
    ]


def peering(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kopf's peering CRDs and the peering objects the chart creates."""
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition" and d["spec"]["group"] == "kopf.dev"]
    return crds + [d for d in documents if d["kind"] in ("ClusterKopfPeering", "KopfPeering")]


def token_kubeconfig(kube: Kube, path: Path) -> Path:
    config = json.loads(kube.kubeconfig.read_text())
    config["users"] = [{"name": "emulator", "user": {"token": TOKEN}}]
    path.write_text(json.dumps(config))
    return path


def granted(rules: list[tuple[str | None, dict[str, Any]]]) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for _, rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


async def a_whole_life(kube: Kube, namespace: str, server: EmbeddedValkey) -> None:
    await kube.aapply(secret("valkey-auth", allow="ruled", password="rbac-pw"), namespace)
    valkey = {"host": server.host, "port": server.port, "passwordSecretRef": {"name": "valkey-auth"}}
    await kube.aapply(agentcache("ruled", valkey, deletionPolicy="Delete"), namespace)

    async def deployed() -> bool:
        body = await kube.aget("agentcaches", "ruled", namespace)
        reasons = {kind: condition(body, kind).get("reason") for kind in ("Ready", "DashboardsReady", "AlertsReady")}
        return reasons == {"Ready": "Ready", "DashboardsReady": "Deployed", "AlertsReady": "Deployed"}

    await eventually(deployed, what="Ready, with dashboards and rules")
    labels = {"monitoring": {"dashboards": {"labels": {"team": "ml"}}, "alerts": {"labels": {"team": "ml"}}}}
    await kube.akubectl(
        "patch", "agentcache", "ruled", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": labels})
    )

    async def relabelled() -> bool:
        rule = await kube.aget("prometheusrules", "agentcache-ruled-alerts", namespace)
        config_map = await kube.aget("configmap", "agentcache-ruled-dashboards", namespace)
        return all(
            (child or {}).get("metadata", {}).get("labels", {}).get("team") == "ml" for child in (rule, config_map)
        )

    await eventually(relabelled, what="the children patched")
    disable = {"spec": {"monitoring": {"alerts": {"enabled": False}}}}
    await kube.akubectl("patch", "agentcache", "ruled", "-n", namespace, "--type=merge", "-p", json.dumps(disable))

    async def removed() -> bool:
        return await kube.aget("prometheusrules", "agentcache-ruled-alerts", namespace) is None

    await eventually(removed, what="the rule deleted")
    await kube.akubectl("delete", "agentcache", "ruled", "-n", namespace, "--wait=true", "--timeout=30s")


@pytest.fixture
def private_kube(tmp_path: Path) -> Iterator[Kube]:
    """An emulator for one test, with the AgentCache CRD and prometheus-operator's and grafana-operator's kinds."""
    if KUBECTL is None or OPERATOR is None:
        pytest.skip("kubectl or the agent-cache-operator command is missing")
    thread = EmulatorThread().start()
    write_kubeconfig(tmp_path / "admin-kubeconfig", thread.url)
    kube = Kube(tmp_path / "admin-kubeconfig", real=False, emulator=thread)
    try:
        for crd in (build_crd(), PROMETHEUS_RULE_CRD, GRAFANA_DASHBOARD_CRD):
            kube.apply(crd)
        yield kube
    finally:
        thread.stop()


@pytest.mark.parametrize("watched", [False, True], ids=["cluster-wide", "watch-namespaces"])
async def test_the_operator_needs_exactly_the_chart_rbac(
    private_kube: Kube, tmp_path: Path, watched: bool, valkey_server_factory: Callable[..., EmbeddedValkey]
) -> None:
    kube, namespace = private_kube, "team-a"
    assert kube.emulator is not None
    emulator = kube.emulator
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    documents = render(*(["--set", f"watchNamespaces={{{namespace}}}"] * watched))  # peering on, as by default
    for document in peering(documents):
        kube.apply(document)
    (peering_name,) = {d["metadata"]["name"] for d in documents if d["kind"] in ("ClusterKopfPeering", "KopfPeering")}
    rules = chart_rules(documents)
    authorizer: Authorizer = emulator.call(lambda api: api.restrict(TOKEN, rules))
    server = valkey_server_factory(password="rbac-pw")
    env = {"KUBECONFIG": str(token_kubeconfig(kube, tmp_path / "kubeconfig"))}
    op = OperatorProcess(
        kube, namespace, tmp_path / "operator.log", env=env, all_namespaces=not watched, peering=peering_name
    )
    try:
        op.start()
        await a_whole_life(kube, namespace, server)
    except BaseException:
        print(op.log()[-20000:])
        raise
    finally:
        op.stop()
    log = emulator.call(lambda api: list(authorizer.log))
    denied = [access for access in log if not access.allowed]
    assert not denied, denied
    used = {(access.verb, access.group, access.resource) for access in log}
    assert granted(rules) - ADMISSION_ONLY <= used, sorted(granted(rules) - ADMISSION_ONLY - used)
