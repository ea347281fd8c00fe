"""A real Prometheus scraping a real workload of the library (and the operator's real metrics).

Proves that every dashboard panel's query returns data once its variables are filled in, and that every rule —
the platform-wide files and the operator's per-cache groups — is loaded and evaluated by Prometheus without error.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from agent_cache.embedded import EmbeddedValkey
from agent_cache_operator.bundle import prometheus_rule_groups
from agent_cache_operator.metrics import OperatorMetrics
from tests.observability.conftest import ROOT
from tests.observability.live_workload import CACHE, drive
from tests.servers import free_port

NAMESPACE = "shop"
OPERATOR_NAMESPACE = "agent-cache-system"
DEADLINE_S = 60.0
VARIABLES = {
    "$namespace": NAMESPACE,
    "$cache_name": CACHE,
    "$tool_name": ".*",
    "$__rate_interval": "15s",
    "$__range": "5m",
}


@dataclass(frozen=True)
class Failure:
    reason: str
    metric_result: str


def _get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _operator_metrics() -> OperatorMetrics:
    """The operator's real metric definitions, exercised the way its handlers do."""
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.manage("uid-1")
    for trigger in ("create", "timer"):
        with metrics.reconcile(trigger):
            pass
        metrics.result(trigger, None)
    metrics.result("timer", Failure("ValkeyUnavailable", "valkey_unavailable"))
    metrics.config_pushes.labels("new_version").inc()
    return metrics


@pytest.fixture(scope="module")
def prometheus(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    valkey = EmbeddedValkey().start()
    registry = CollectorRegistry()
    cache_server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    operator = _operator_metrics()
    operator_port = free_port()
    operator.serve(operator_port, "127.0.0.1")
    stop = threading.Event()
    workload = threading.Thread(target=lambda: asyncio.run(drive(valkey.url, registry, stop)), daemon=True)
    workload.start()

    per_cache = tmp / "per-cache.rules.yaml"
    groups = prometheus_rule_groups(CACHE, NAMESPACE, {"expectedMinRequestsPerSecond": 1})
    per_cache.write_text(yaml.safe_dump({"groups": groups}))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [
            str(ROOT / "dashboards/rules/agent-cache.rules.yaml"),
            str(ROOT / "dashboards/rules/agent-cache-operator.rules.yaml"),
            str(per_cache),
        ],
        "scrape_configs": [
            {
                "job_name": "agent-cache",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{cache_server.server_port}"], "labels": {"namespace": NAMESPACE}}
                ],
            },
            {
                "job_name": "agent-cache-operator",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{operator_port}"], "labels": {"namespace": OPERATOR_NAMESPACE}}
                ],
            },
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp / 'data'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert process.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        stop.set()
        workload.join(timeout=30)
        operator.stop()
        cache_server.shutdown()
        cache_server.server_close()
        valkey.stop()


def _substitute(expr: str, dashboard: str = "") -> str:
    variables = {**VARIABLES, "$namespace": OPERATOR_NAMESPACE} if dashboard == "agent-cache-operator" else VARIABLES
    for name, value in sorted(variables.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def _queries() -> list[tuple[str, str, str, bool]]:
    """(dashboard, panel, expression, instant) of every panel target."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                instant = bool(target.get("instant")) and not target.get("range")
                out.append((path.stem, panel["title"], _substitute(target["expr"], path.stem), instant))
    return out


def _has_data(base: str, expr: str, instant: bool) -> tuple[bool, str]:
    now = time.time()
    if instant:
        body = _get(base, "/api/v1/query", query=expr, time=str(now))
    else:
        body = _get(base, "/api/v1/query_range", query=expr, start=str(now - 30), end=str(now), step="1")
    if body["status"] != "success":
        return False, str(body)
    result = body["data"]["result"]
    return bool(result), f"{len(result)} series"


def test_every_dashboard_query_returns_data(prometheus: str) -> None:
    pending = {(d, p, e): i for d, p, e, i in _queries()}
    assert len(pending) > 30
    deadline = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < deadline:
        for key, instant in list(pending.items()):
            ok, _ = _has_data(prometheus, key[2], instant)
            if ok:
                del pending[key]
        if pending:
            time.sleep(1)
    assert not pending, "queries without data:\n" + "\n".join(f"{d} / {p}: {e}" for d, p, e in pending)


def test_every_variable_query_finds_values(prometheus: str) -> None:
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            inner = _substitute(variable["query"], path.stem).removeprefix("label_values(").removesuffix(")")
            selector, label = (part.strip() for part in inner.rsplit(",", 1))
            deadline = time.monotonic() + DEADLINE_S
            while True:
                values = _get(prometheus, f"/api/v1/label/{label}/values", **{"match[]": selector})["data"]
                if values or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert values, f"{path.stem}: variable {variable['name']} finds nothing"


def test_every_rule_is_loaded_and_evaluates_without_error(prometheus: str) -> None:
    expected = sum(
        len(g["rules"])
        for path in ("agent-cache.rules.yaml", "agent-cache-operator.rules.yaml")
        for g in yaml.safe_load((ROOT / "dashboards/rules" / path).read_text())["groups"]
    ) + sum(len(g["rules"]) for g in prometheus_rule_groups(CACHE, NAMESPACE, {"expectedMinRequestsPerSecond": 1}))
    deadline = time.monotonic() + DEADLINE_S
    while True:
        groups = _get(prometheus, "/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = [r for r in rules if r.get("lastEvaluation", "").startswith("0001") is False]
        if (len(rules) == expected and len(evaluated) == expected) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(rules) == expected
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy
    for rule in rules:  # and each expression on its own, through the query API
        body = _get(prometheus, "/api/v1/query", query=rule["query"])
        assert body["status"] == "success", (rule["name"], body)


def test_recording_rules_produce_series(prometheus: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    names = {
        r["record"]
        for g in yaml.safe_load((ROOT / "dashboards/rules/agent-cache.rules.yaml").read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    }
    missing = set(names)
    while missing and time.monotonic() < deadline:
        missing = {n for n in missing if not _get(prometheus, "/api/v1/query", query=n)["data"]["result"]}
        if missing:
            time.sleep(1)
    assert not missing
