"""Evictions end to end: a real Valkey with a small maxmemory under allkeys-lru, the library filling it through the
cache, a real Prometheus scraping the library: the AgentCacheEvicting expression (as the rules file has it) and the
Overview panel's query both see evictions, labelled by the primary they happened on."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from valkey.asyncio import Valkey

from agent_cache import AgentCache, TelemetryOptions, _memory
from agent_cache.embedded import EmbeddedValkey
from tests.observability.conftest import ROOT
from tests.servers import free_port

pytestmark = [pytest.mark.valkey, pytest.mark.prometheus]

NAME = "evicted_bot"
DEADLINE_S = 60.0


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr, 'time': str(time.time())})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _eventually(check: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while not (value := check()):
        assert time.monotonic() < deadline, f"not met within {DEADLINE_S}s: {what}"
        time.sleep(0.5)
    return value


@pytest.fixture
def scraped_registry(prometheus_bin: str, tmp_path: Path) -> Iterator[tuple[CollectorRegistry, str]]:
    registry = CollectorRegistry()
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "agent-cache",
                "static_configs": [{"targets": [f"127.0.0.1:{server.server_port}"], "labels": {"namespace": "shop"}}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield registry, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        server.shutdown()
        server.server_close()


def _evicting_expression() -> str:
    groups = yaml.safe_load((ROOT / "dashboards/rules/agent-cache.rules.yaml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"] if rule.get("alert") == "AgentCacheEvicting"]
    assert len(rules) == 1
    return str(rules[0]["expr"])


def _panel_expression() -> str:
    panels = json.loads((ROOT / "dashboards/agent-cache-overview.json").read_text())["panels"]
    panel = next(p for p in panels if p["title"] == "Keys evicted and expired per second")
    expr = next(t["expr"] for t in panel["targets"] if "evicted" in t["expr"])
    # A minute, as Grafana picks when zoomed out: a loaded machine may stall scrapes for several seconds, and a
    # shorter window could then never hold a sample from before the evictions and one from after.
    for name, value in {"$namespace": "shop", "$cache_name": NAME, "$__rate_interval": "1m"}.items():
        expr = expr.replace(name, value)
    return str(expr)


async def _fill(url: str, registry: CollectorRegistry, baseline: Any, evicted: Any) -> int:
    client = Valkey.from_url(url)
    cache = AgentCache(
        client=client, name=NAME, telemetry=TelemetryOptions(registry=registry), stats_flush_interval_s=0.05
    )
    try:
        await cache.ensure_discovery_ready()  # starts upkeep
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while not await asyncio.to_thread(baseline):  # Prometheus has the counter at 0 before any eviction
            assert asyncio.get_running_loop().time() < deadline, "Prometheus never scraped the first reading"
            await asyncio.sleep(0.5)
        for i in range(400):  # random answers: compression cannot keep them under maxmemory
            params = {"model": "m", "messages": [{"role": "user", "content": str(i)}]}
            await cache.llm.store(params, secrets.token_urlsafe(15_000))
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while not await asyncio.to_thread(evicted):  # stay up (and read INFO) until Prometheus has seen the evictions
            assert asyncio.get_running_loop().time() < deadline, "Prometheus never saw the evictions"
            await asyncio.sleep(0.5)
        info = await client.info("stats")
        return int(info["evicted_keys"])
    finally:
        await cache.close()
        await client.aclose()


def test_evictions_reach_the_alert_expression_and_the_panel(
    scraped_registry: tuple[CollectorRegistry, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_memory, "READ_INTERVAL_S", 0.5)
    registry, prometheus = scraped_registry
    server = EmbeddedValkey(args=["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]).start()
    node = f"{server.host}:{server.port}"
    alert, panel = _evicting_expression(), _panel_expression()
    try:

        def scraped() -> list[dict[str, Any]]:
            try:
                return _query(prometheus, "agent_cache_valkey_evicted_keys_total")
            except OSError:  # Prometheus is still starting
                return []

        def alert_fires() -> list[dict[str, Any]]:
            return _query(prometheus, alert)

        evicted_keys = asyncio.run(_fill(server.url, registry, scraped, alert_fires))
    finally:
        server.stop()
    firing = _query(prometheus, alert)
    assert [series["metric"] for series in firing] == [{"namespace": "shop", "cache_name": NAME, "node": node}]
    assert evicted_keys > 0

    def panel_shows_evictions() -> list[dict[str, Any]]:
        # Positive, not merely present: the subquery's steps are whole seconds, so for up to a second after the
        # alert expression (evaluated now) sees the evictions, the last step still holds only readings from before.
        rates = _query(prometheus, f"max_over_time(({panel})[1m:1s])")
        return rates if any(float(series["value"][1]) > 0 for series in rates) else []

    rates = _eventually(panel_shows_evictions, "the panel's evictions")
    assert [series["metric"]["node"] for series in rates] == [node]
