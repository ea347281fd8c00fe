"""The Kubernetes API emulator keeps the promises Kopf and kubectl rely on (the kmock gaps closed in emulator.py).

These run only on the emulator: against a real cluster (``KUBECONFIG``) there is nothing of ours to test here.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.operator.conftest import KUBECTL, Kube

pytestmark = pytest.mark.k8s


@pytest.fixture
def emulated(kube: Kube) -> Kube:
    if kube.emulator is None:
        pytest.skip("a real cluster is configured (KUBECONFIG): the emulator is not in use")
    return kube


def call(kube: Kube, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
    assert kube.emulator is not None
    request = urllib.request.Request(
        kube.emulator.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def config_map(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_objects_get_identity_versions_and_generations(emulated: Kube, namespace: str) -> None:
    status, created = call(emulated, "POST", f"/api/v1/namespaces/{namespace}/configmaps", config_map("a", k="1"))
    meta = created["metadata"]
    assert status == 201 and meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    path = f"/api/v1/namespaces/{namespace}/configmaps/a"
    # gap 2: a failed JSON-patch test is a 422 (Kopf's optimistic concurrency), a right one applies
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "add", "path": "/data/x", "value": "1"},
    ]
    assert call(emulated, "PATCH", path, stale, "application/json-patch+json")[0] == 422
    fresh = [{**stale[0], "value": meta["resourceVersion"]}, stale[1]]
    status, patched = call(emulated, "PATCH", path, fresh, "application/json-patch+json")
    assert status == 200 and int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert patched["metadata"]["generation"] == 2
    # A no-op patch changes nothing, not even the resourceVersion.
    status, same = call(emulated, "PATCH", path, {"data": {"x": "1"}}, "application/merge-patch+json")
    assert same["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    assert call(emulated, "POST", f"/api/v1/namespaces/{namespace}/configmaps", config_map("a"))[0] == 409


def test_generate_name_lists_and_discovery(emulated: Kube, namespace: str) -> None:
    event = {"metadata": {"generateName": "kopf-event-"}, "reason": "Test", "message": "hello"}
    names = {
        call(emulated, "POST", f"/api/v1/namespaces/{namespace}/events", event)[1]["metadata"]["name"] for _ in "ab"
    }
    assert len(names) == 2 and all(name.startswith("kopf-event-") for name in names)  # gap 3
    status, listing = call(emulated, "GET", f"/api/v1/namespaces/{namespace}/events")
    assert status == 200
    assert listing["kind"] == "EventList" and listing["apiVersion"] == "v1"  # gap 4
    assert int(listing["metadata"]["resourceVersion"]) > 0
    assert call(emulated, "GET", "/api/v1")[1]["groupVersion"] == "v1"  # gap 7
    output = emulated.kubectl("get", "events", "-n", namespace).stdout
    assert sum(name in output for name in names) == 2


def watch(kube: Kube, path: str) -> Iterator[dict[str, Any]]:
    assert kube.emulator is not None
    url = urlsplit(kube.emulator.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request("GET", path)
    reply = connection.getresponse()
    assert reply.getheader("Content-Type", "").startswith("application/json")  # gap 6
    try:
        while line := reply.readline():
            yield json.loads(line)
    finally:
        connection.close()


def test_a_watch_resumes_from_a_resource_version_without_losing_changes(emulated: Kube, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    call(emulated, "POST", base, config_map("before"))
    listed = call(emulated, "GET", base)[1]["metadata"]["resourceVersion"]
    # Changes made after the list and before the watch starts must still be delivered (gap 5).
    call(emulated, "POST", base, config_map("between"))
    call(emulated, "PATCH", f"{base}/before", {"data": {"k": "v"}}, "application/merge-patch+json")
    events = watch(emulated, f"{base}?watch=true&resourceVersion={listed}&timeoutSeconds=2")
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [("ADDED", "between"), ("MODIFIED", "before")]
    # Without a resourceVersion a watch starts with the current state.
    snapshot = [e["object"]["metadata"]["name"] for e in watch(emulated, f"{base}?watch=true&timeoutSeconds=1")]
    assert sorted(snapshot) == ["before", "between"]


def test_kubectl_watch_and_printer_columns(emulated: Kube, namespace: str) -> None:
    assert KUBECTL is not None
    env_kubeconfig = ["--kubeconfig", str(emulated.kubeconfig)]
    emulated.apply(config_map("first"), namespace)
    process = subprocess.Popen(
        [KUBECTL, *env_kubeconfig, "get", "configmaps", "-n", namespace, "-w", "--request-timeout=3s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    emulated.apply(config_map("second"), namespace)
    out, _ = process.communicate(timeout=20)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "AGE"] and [line.split()[0] for line in lines[1:]] == ["first", "second"]


def test_custom_resource_definitions_come_and_go(emulated: Kube, namespace: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.dev"},
        "spec": {
            "group": "example.dev",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 3}}}
                            },
                        }
                    },
                }
            ],
        },
    }
    emulated.apply(crd)
    widget = {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {},
        "status": {"x": 1},
    }
    emulated.apply(widget, namespace)
    body = emulated.get("widgets", "w", namespace)
    assert body is not None and body["spec"] == {"size": 3} and "status" not in body  # defaulted; status ignored
    path = f"/apis/example.dev/v1/namespaces/{namespace}/widgets/w"
    call(
        emulated,
        "PATCH",
        f"{path}/status",
        {"status": {"ok": True}, "spec": {"size": 9}},
        "application/merge-patch+json",
    )
    body = emulated.get("widgets", "w", namespace)
    assert body is not None and body["status"] == {"ok": True} and body["spec"] == {"size": 3}
    assert body["metadata"]["generation"] == 1  # status changes do not bump the generation
    emulated.kubectl("delete", "crd", "widgets.example.dev")
    assert call(emulated, "GET", path)[0] == 404
