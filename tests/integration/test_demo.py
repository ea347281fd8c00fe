"""``agent-cache demo``: the workload against a real server, and the command as a user runs it."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, AgentCacheOptions, TelemetryOptions
from agent_cache.demo import WorkloadProgress, run_workload
from agent_cache.demo.workload import TIER_DEFAULTS, TOOLS
from tests.cli.running import agent_cache, start_agent_cache

SUMMARY_FIELDS = {
    "cache_name",
    "requests",
    "llm",
    "tool",
    "session",
    "models",
    "tools",
    "cost_saved",
    "cost_saved_micros",
    "latency_avoided_s",
    "hit_latency_p50_ms",
    "hit_latency_p99_ms",
    "wall_time_s",
    "metrics_url",
}


@pytest.fixture
async def demo_cache(valkey_client: Valkey) -> AsyncIterator[AgentCache]:
    options = AgentCacheOptions(
        client=valkey_client,
        name="demo_test",
        tier_defaults=TIER_DEFAULTS,
        telemetry=TelemetryOptions(registry=CollectorRegistry()),
    )
    async with AgentCache(options) as cache:
        yield cache


async def live_threads(client: Valkey, cache_name: str) -> set[str]:
    return {
        key.decode().split(":")[2]
        async for key in client.scan_iter(match=f"{cache_name}:session:*", count=1000)  # "{thread}" segment
    }


@pytest.mark.valkey
async def test_workload_exercises_every_tier_and_agrees_with_stats(
    demo_cache: AgentCache, valkey_client: Valkey
) -> None:
    updates: list[WorkloadProgress] = []
    summary = await run_workload(demo_cache, requests=160, users=4, speed=0, seed=3, on_progress=updates.append)
    stats = await demo_cache.stats()

    assert summary.llm.hits > 0 and summary.llm.misses > 0
    assert summary.tool.hits > 0 and summary.tool.misses > 0
    assert 0 < summary.session.hits < summary.session.reads and summary.session.writes > 0
    assert (summary.llm.hits, summary.llm.misses) == (stats.llm.hits, stats.llm.misses)
    assert (summary.tool.hits, summary.tool.misses) == (stats.tool.hits, stats.tool.misses)
    assert (summary.session.reads, summary.session.writes) == (stats.session.reads, stats.session.writes)
    assert {t.tool: (t.hits, t.misses) for t in summary.tools} == {
        name: (s.hits, s.misses) for name, s in stats.per_tool.items()
    }
    assert {t.tool: t.ttl for t in summary.tools} == {name: spec.ttl for name, spec in TOOLS.items()}
    assert sum(m.hits for m in summary.models) == summary.llm.hits and len(summary.models) == 3

    assert summary.cost_saved > 0
    assert summary.cost_saved == stats.cost_saved_micros / 1_000_000 == summary.cost_saved_micros / 1_000_000
    assert summary.latency_avoided_s > 0  # computed from the simulated latencies, never slept at speed 0

    effectiveness = {e.tool: e.recommendation for e in await demo_cache.tool_effectiveness()}
    assert {t.tool: t.recommendation for t in summary.tools} == effectiveness
    assert len(set(effectiveness.values())) >= 2
    assert effectiveness["lookup_customer"] == "decrease_ttl_or_disable"  # a long tail of customers never repeats

    session = summary.session
    assert 0 < session.threads_destroyed < session.threads_created
    assert len(await live_threads(valkey_client, "demo_test")) == session.threads_created - session.threads_destroyed

    assert [u.turns_done for u in updates] == list(range(1, 161))
    assert updates[-1].turns_total == 160


@pytest.mark.valkey
async def test_the_same_seed_asks_the_same_questions(demo_cache: AgentCache) -> None:
    """One user, so no races between users: two runs on a clean cache see exactly the same hits."""
    runs = []
    for _ in range(2):
        await demo_cache.flush()
        summary = await run_workload(demo_cache, requests=60, users=1, speed=0, seed=11)
        runs.append((summary.llm, summary.tool.hits, summary.tools, summary.session, summary.cost_saved_micros))
    assert runs[0] == runs[1]


@pytest.mark.valkey
def test_demo_command_prints_a_json_summary_with_an_embedded_server() -> None:
    done = agent_cache("demo", "--requests", "150", "--speed", "0", "--json", "--metrics-port", "0", timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert SUMMARY_FIELDS <= summary.keys()
    assert summary["cache_name"] == "agent_cache_demo" and summary["requests"] == 150
    assert summary["llm"]["hits"] + summary["llm"]["misses"] == 150
    assert summary["cost_saved"] > 0
    assert {t["tool"] for t in summary["tools"]} == set(TOOLS)
    assert summary["metrics_url"].startswith("http://127.0.0.1:")
    assert "embedded valkey-server" in done.stderr


def test_unreachable_valkey_is_one_line_and_exit_code_2() -> None:
    done = agent_cache("demo", "--url", "valkey://127.0.0.1:1", "--speed", "0", "--metrics-port", "0", timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Valkey at valkey://127.0.0.1:1"), done.stderr


@pytest.mark.valkey
def test_tables_on_a_pipe_have_no_terminal_escapes(valkey_url: str) -> None:
    run = ("--url", valkey_url, "--name", "demo_pipe", "--requests", "40", "--speed", "0", "--metrics-port", "0")
    done = agent_cache("demo", *run, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    for heading in ("Cache hits by tier", "Tool results", "Saved", "Cache hit latency"):
        assert heading in done.stdout
    assert "decrease_ttl_or_disable" in done.stdout


def test_missing_cli_extra_names_the_pip_command() -> None:
    script = "import sys; sys.modules['rich'] = None; from agent_cache.cli import main; sys.exit(main(['demo']))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert 'pip install "agent-cache[cli]"' in done.stderr
    assert "Traceback" not in done.stderr


def read_until(stream: Any, pattern: str) -> re.Match[str]:
    """Read status lines until one matches (the process's own exit ends the wait with a failure)."""
    seen = []
    for line in stream:
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matched {pattern!r} in:\n{''.join(seen)}")


def start_demo(*args: str) -> subprocess.Popen[str]:
    return start_agent_cache("demo", "--json", "--metrics-port", "0", *args)


@pytest.mark.valkey
def test_metrics_are_served_while_the_demo_holds(valkey_url: str) -> None:
    with start_demo("--url", valkey_url, "--requests", "50", "--speed", "0", "--hold", "120") as demo:
        try:
            url = read_until(demo.stderr, r"Metrics\s+(http://\S+)").group(1)
            read_until(demo.stderr, r"Serving .* more")  # the run is over; the hold has begun
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            demo.send_signal(signal.SIGINT)  # Ctrl-C ends the hold early and cleanly
            stdout, _ = demo.communicate(timeout=30)
        finally:
            demo.kill()
    requests = re.findall(r"^agent_cache_requests_total\{(.*)\} (\S+)$", body, re.M)
    llm_lookups = sum(float(value) for labels, value in requests if 'tier="llm"' in labels)
    assert all('cache_name="agent_cache_demo"' in labels for labels, _ in requests)
    assert llm_lookups == 50  # one LLM lookup per turn
    assert demo.returncode == 0
    assert json.loads(stdout)["metrics_url"] == url
    with pytest.raises(urllib.error.URLError):  # the server is gone with the process
        urllib.request.urlopen(url, timeout=5)


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.valkey
def test_ctrl_c_stops_the_embedded_server() -> None:
    with start_demo("--requests", "100000", "--speed", "1") as demo:
        try:
            port = int(read_until(demo.stderr, r"embedded valkey-server on 127\.0\.0\.1:(\d+)").group(1))
            assert port_is_open(port)
            time.sleep(0.5)  # let the users start their first turns
            demo.send_signal(signal.SIGINT)
            _, stderr = demo.communicate(timeout=30)
        finally:
            demo.kill()
    assert demo.returncode == 130
    assert stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in stderr
    assert not port_is_open(port)


@pytest.mark.valkey
def test_on_a_pipe_progress_is_plain_lines_and_tables_have_no_trailing_spaces(valkey_url: str) -> None:
    common = ("demo", "--url", valkey_url, "--name", "demo_lines", "--requests", "20", "--speed", "0")
    every_turn = agent_cache(*common, "--metrics-port", "0", "--progress-every", "0", timeout=120)
    assert every_turn.returncode == 0, every_turn.stderr
    line = re.compile(r"^  agents at work: (\d+)/20 turns · LLM hits \d+% · tool hits \d+% · \d+ s$", re.M)
    done = [int(n) for n in line.findall(every_turn.stdout)]
    assert done == list(range(1, 21))
    lines = every_turn.stdout.splitlines()
    assert "Tool results" in lines and not [line for line in lines if line != line.rstrip()]

    default = agent_cache(*common, "--metrics-port", "0", timeout=120)
    assert default.returncode == 0, default.stderr
    assert "  agents at work: 20/20 turns" in default.stdout  # at least the line that says the run is over
