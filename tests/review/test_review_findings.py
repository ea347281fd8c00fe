"""Defects found by reviewing the finished parts of issues 13 and 14, each shown on a real Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import (
    AgentCache,
    AgentCacheUsageError,
    ConfigRefreshOptions,
    DiscoveryOptions,
    ModelPolicy,
    TelemetryOptions,
    ToolPolicy,
)
from agent_cache.cli import build_parser
from agent_cache.config import CacheConfig, apply_config
from tests.cli.running import agent_cache
from tests.lifecycle.programs import run_program
from tests.operator.conftest import OPERATOR
from tests.reliability.conftest import make_cache
from tests.servers import ServerHandle, free_port

pytestmark = pytest.mark.valkey

PARAMS = {"model": "gpt-4o", "messages": [{"role": "user", "content": "review"}]}

ONE_CACHE_LOOP_AFTER_LOOP = """
    import asyncio
    import os

    from valkey.asyncio import Valkey

    from agent_cache import AgentCache, BackendError, DiscoveryOptions

    client = Valkey(host="127.0.0.1", port=int(os.environ["VALKEY_PORT"]))
    cache = AgentCache(client=client, name="review_loops", discovery=DiscoveryOptions(enabled=False))


    async def concurrent_stats():
        cache.tool.reset_policies()  # each stats() re-reads the live config: both refresh at once
        await cache.tool.store("lookup", {"id": 1}, "r")
        assert (await cache.tool.check("lookup", {"id": 1})).hit  # a count to flush: both flush at once
        return await asyncio.gather(cache.stats(), cache.stats(), return_exceptions=True)


    for run in range(3):
        for outcome in asyncio.run(concurrent_stats()):
            # valkey-py's pooled connections of an ended loop fail once each (a BackendError: the client's
            # matter); anything else escaped the cache.
            if isinstance(outcome, BaseException) and not isinstance(outcome, BackendError):
                print("escaped", repr(outcome))
    print("done")
"""


def test_one_cache_serves_loop_after_loop_with_concurrent_calls(valkey_server: ServerHandle, tmp_path: Path) -> None:
    """A module-level cache used by one ``asyncio.run`` after another (closing is not required): the locks
    that serialize stats flushes and live-config refreshes were bound to the first loop that contended for
    them, so concurrent calls in the next loop raised ``RuntimeError: ... bound to a different event loop``
    (and the same error ended the background upkeep and the config watcher for good)."""
    outcome = run_program(ONE_CACHE_LOOP_AFTER_LOOP, tmp_path, valkey_server.port)
    assert outcome.returncode == 0, outcome.stderr
    assert "done" in outcome.stdout
    assert "escaped" not in outcome.stdout, outcome.stdout
    assert "bound to a different event loop" not in outcome.stderr, outcome.stderr


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {"AGENT_CACHE_OPERATOR_METRICS_PORT": "90x"}, "AGENT_CACHE_OPERATOR_METRICS_PORT), got '90x'"),
        ((), {"AGENT_CACHE_OPERATOR_RESYNC_SECONDS": "30s"}, "AGENT_CACHE_OPERATOR_RESYNC_SECONDS), got '30s'"),
        ((), {"AGENT_CACHE_OPERATOR_PEERING_LIFETIME": "1m"}, "argument --peering-lifetime"),
        (("--liveness-port", "70000"), {}, "argument --liveness-port: must be a port number from 0 (none) to 65535"),
        (("--resync-interval", "0"), {}, "argument --resync-interval: must be a number of seconds above 0"),
        (("--retry-base", "nan"), {}, "argument --retry-base"),
        (("--delete-retries", "-1"), {}, "argument --delete-retries"),
    ],
)
def test_operator_options_from_the_environment_are_checked_like_flags(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    """The chart sets the operator's options as environment variables; a typo there (or a port out of range on
    the command line) ended in a Python traceback (ValueError at import of the parser, OverflowError from bind)
    instead of one usage error line and exit 2. A zero resync interval was accepted too."""
    if OPERATOR is None:
        pytest.skip('the agent-cache-operator command is not installed: pip install -e ".[dev]"')
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("AGENT_CACHE_OPERATOR_", "KUBE"))}
    result = subprocess.run(
        [OPERATOR, *args],
        capture_output=True,
        text=True,
        env={**clean, "HOME": str(tmp_path), **env},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("agent-cache-operator: error: ") and expected in last, last


async def test_a_follower_that_once_swallowed_a_cancellation_still_outlives_a_cancelled_leader(
    valkey_client: Any,
) -> None:
    """A follower is cancelled only if someone cancelled it *while it waited*: the check used the task's whole
    ``cancelling()`` count, so a task that had caught an earlier cancellation and gone on (a retry loop) was
    cancelled along with the leader it joined."""
    cache = make_cache(valkey_client)
    started = asyncio.Event()
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.Event().wait()  # the leader's computation ends only by cancellation
        return "answer"

    async def follower_that_carried_on() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # an earlier cancellation, caught and not undone
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            await asyncio.sleep(0)
        return (await cache.llm.get_or_compute(PARAMS, compute)).response or ""

    leader = asyncio.create_task(cache.llm.get_or_compute(PARAMS, compute))
    await started.wait()
    follower = asyncio.create_task(follower_that_carried_on())
    for _ in range(3):
        await asyncio.sleep(0)  # the follower has joined the flight
    leader.cancel()
    assert await follower == "answer"
    with pytest.raises(asyncio.CancelledError):
        await leader
    await cache.close()


async def test_a_tool_set_not_cacheable_elsewhere_is_never_served_from_the_cache(valkey_client: Any) -> None:
    """docs/api.md: "A tool whose policy says cacheable: false is never cached ... get_or_compute calls the tool
    every time"; set_policy: "every instance of this cache picks it up". An instance that ignores the live config
    (``ConfigRefreshOptions(enabled=False)``) never reads the policies hash, so it caches ``send_email`` and the
    second call sends nothing."""
    app = AgentCache(client=valkey_client, name="review_policy", discovery=DiscoveryOptions(enabled=False))
    await app.tool.set_policy("send_email", ToolPolicy(cacheable=False))
    await app.close()
    worker = AgentCache(
        client=valkey_client,
        name="review_policy",
        discovery=DiscoveryOptions(enabled=False),
        config_refresh=ConfigRefreshOptions(enabled=False),
    )
    sent = 0

    async def send_email() -> str:
        nonlocal sent
        sent += 1
        return "sent"

    for _ in range(3):
        await worker.tool.get_or_compute("send_email", {"to": "a@example.com"}, send_email)
    await worker.close()
    assert sent == 3


async def test_a_model_set_not_cacheable_elsewhere_is_never_served_from_the_cache(valkey_client: Any) -> None:
    """The model policies hash had the same gap: a worker with the live config off cached a model that another
    instance set ``cacheable: false``, and served its answer to the next caller."""
    app = AgentCache(client=valkey_client, name="review_model", discovery=DiscoveryOptions(enabled=False))
    await app.llm.set_model_policy("private-*", ModelPolicy(cacheable=False))
    await app.close()
    worker = AgentCache(
        client=valkey_client,
        name="review_model",
        discovery=DiscoveryOptions(enabled=False),
        config_refresh=ConfigRefreshOptions(enabled=False),
    )
    params = {"model": "private-llm", "messages": [{"role": "user", "content": "my salary?"}]}
    calls = 0

    async def ask() -> str:
        nonlocal calls
        calls += 1
        return f"answer {calls}"

    answers = [(await worker.llm.get_or_compute(params, ask)).response for _ in range(3)]
    await worker.llm.store(params, "stored anyway?")
    assert answers == ["answer 1", "answer 2", "answer 3"]
    assert not (await worker.llm.check(params)).hit
    await worker.close()


async def test_a_policy_set_later_reaches_an_instance_with_the_live_config_off(valkey_client: Any) -> None:
    """set_policy: "every instance of this cache picks it up on refresh" — upkeep re-reads the policies on the
    config interval whether or not the instance follows the live config."""
    worker = AgentCache(
        client=valkey_client,
        name="review_later",
        discovery=DiscoveryOptions(enabled=False),
        config_refresh=ConfigRefreshOptions(enabled=False, interval_ms=1000),
        stats_flush_interval_s=0.05,
    )
    assert worker.tool.get_policy("send_email") is None
    await worker.tool.check("send_email", {})  # starts upkeep
    app = AgentCache(client=valkey_client, name="review_later", discovery=DiscoveryOptions(enabled=False))
    await app.tool.set_policy("send_email", ToolPolicy(cacheable=False))
    await app.close()
    await _until(lambda: worker.tool.get_policy("send_email") is not None, "the worker read the new policy")
    await worker.close()


async def test_a_restarted_upkeep_never_adds_a_second_config_watcher(
    valkey_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the upkeep task had ended with an error, the next operation started a new one — and a second
    live-config watcher beside the first, still running one: two subscriptions, two applies per push."""
    ended = asyncio.Event()

    async def upkeep_that_fails(self: AgentCache, settled: Any) -> None:
        ended.set()
        raise RuntimeError("a defect in upkeep")

    with monkeypatch.context() as patch:
        patch.setattr(AgentCache, "_upkeep_loop", upkeep_that_fails)
        cache = AgentCache(client=valkey_client, name="review_watchers", discovery=DiscoveryOptions(enabled=False))
        await ended.wait()
    for _ in range(3):
        await asyncio.sleep(0)  # the failed upkeep task is done
    await cache.tool.check("t", {})  # a counted miss starts upkeep again
    names = [task.get_name() for task in asyncio.all_tasks()]
    assert names.count("agent-cache upkeep review_watchers") == 1
    assert names.count("agent-cache config review_watchers") == 1
    await cache.close()


async def test_a_defect_in_one_upkeep_step_does_not_end_upkeep(
    valkey_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upkeep caught only AgentCacheError: any other exception from one step (a bug, bad data a parser missed)
    ended it for good, silently — no more counter flushes, heartbeats or config refreshes."""
    cache = AgentCache(
        client=valkey_client,
        name="review_defect",
        discovery=DiscoveryOptions(enabled=False),
        stats_flush_interval_s=0.05,
    )
    calls = 0

    async def broken_memory_read(now: float) -> None:
        nonlocal calls
        calls += 1
        raise KeyError("used_memory")

    monkeypatch.setattr(cache._memory, "read_if_due", broken_memory_read)
    await cache.tool.check("search", {"q": 1})
    await _until(lambda: calls >= 3, "upkeep went on after the failing step")
    await cache.tool.check("search", {"q": 2})

    async def flushed() -> bool:
        return await valkey_client.hget("review_defect:__stats", "tool:misses") == b"2"

    for _ in range(500):
        if await flushed():
            break
        await asyncio.sleep(0.01)
    assert await flushed(), "upkeep stopped flushing after one step raised"
    await cache.close()


async def _until(condition: Any, what: str) -> None:
    """Wait (polling, no wall-clock assertion) until ``condition()`` holds; a hang is what fails."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def _subscribes(client: Any) -> int:
    info = await client.info("commandstats")
    return int(info.get("cmdstat_subscribe", {}).get("calls", 0))


async def test_a_config_that_cannot_apply_does_not_make_the_watcher_resubscribe(valkey_client: Any) -> None:
    """A refresh that fails on the data (here a tool policy written by hand that the cache cannot read) was taken
    for a lost subscription: the watcher unsubscribed, logged "config subscription lost" and subscribed again,
    every half second for as long as the bad policy stayed, on every instance."""
    registry = CollectorRegistry()
    await valkey_client.hset("review_watch:__tool_policies", "legacy_tool", '{"ttl": "600"}')
    cache = AgentCache(
        client=valkey_client,
        name="review_watch",
        discovery=DiscoveryOptions(enabled=False),
        telemetry=TelemetryOptions(registry=registry),
    )
    await cache.tool.check("t", {})  # starts the watcher
    before = await _subscribes(valkey_client)

    def failures() -> float:
        return registry.get_sample_value("agent_cache_config_refresh_failed_total", {"cache_name": "review_watch"}) or 0

    for ttl in (60, 70, 80, 90, 100):
        await apply_config(valkey_client, "review_watch", CacheConfig.from_spec({"tiers": {"tool": {"ttl": ttl}}}), "t")
        seen = failures()
        await _until(lambda seen=seen: failures() > seen, "the watcher tried the announced config")
    assert await _subscribes(valkey_client) - before <= 1  # the first subscription (if not yet made), and no more
    await cache.close()


async def test_one_unreadable_tool_policy_does_not_block_the_live_config(valkey_client: Any) -> None:
    """README: "A malformed config is logged and counted and the last good one stays". A malformed *policy* of one
    tool (the hash is shared with BetterDB Monitor and the reference package) stopped every later config — tier
    TTLs, cost overrides, the other tools' policies — from ever applying."""
    await valkey_client.hset("review_block:__tool_policies", "legacy_tool", '{"ttl": "600"}')
    cache = AgentCache(
        client=valkey_client,
        name="review_block",
        discovery=DiscoveryOptions(enabled=False),
        config_refresh=ConfigRefreshOptions(subscribe=False),
    )
    await apply_config(valkey_client, "review_block", CacheConfig.from_spec({"tiers": {"tool": {"ttl": 77}}}), "t")
    with contextlib.suppress(AgentCacheUsageError):  # the bad policy may be reported; the config must apply
        await cache.live_config.refresh()
    assert cache.tool.effective_ttl("search") == 77
    await cache.close()


async def test_a_malformed_policy_is_counted_once_per_refresh(valkey_client: Any) -> None:
    """A new live config re-reads the policies as it applies; upkeep then read them again in the same cycle, so
    one malformed policy counted twice in ``agent_cache_config_refresh_failed_total`` and was logged twice."""
    await valkey_client.hset("review_once:__tool_policies", "legacy_tool", '{"ttl": "600"}')
    await apply_config(valkey_client, "review_once", CacheConfig.from_spec({"tiers": {"tool": {"ttl": 77}}}), "t")
    registry = CollectorRegistry()
    cache = AgentCache(
        client=valkey_client,
        name="review_once",
        telemetry=TelemetryOptions(registry=registry),
        config_refresh=ConfigRefreshOptions(subscribe=False, interval_ms=600_000),  # one refresh in this test
    )
    await cache.ensure_discovery_ready()  # upkeep's first cycle is done: config refreshed, policies read
    assert cache.tool.effective_ttl("search") == 77
    labels = {"cache_name": "review_once"}
    assert registry.get_sample_value("agent_cache_config_refresh_failed_total", labels) == 1
    await cache.close()


@pytest.mark.parametrize("command", [["server", "--port"], ["demo", "--metrics-port"]])
@pytest.mark.parametrize("port", ["6_379", "+6379", " 6379", "\u0666\u0663\u0667\u0669", "65536", "-1"])
def test_port_options_take_ascii_digits_only(command: list[str], port: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--url's port is ASCII digits only (as urllib and valkey-py read it), but ``server --port`` and ``demo
    --metrics-port`` went through ``int()`` (two copies of it), which takes ``6_379``, ``+6379`` and Arabic-Indic
    digits: ``agent-cache server --port 6_379`` started a server on 6379."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, port])
    assert exited.value.code == 2
    assert "must be a port number 0-65535" in capsys.readouterr().err
    assert build_parser().parse_args([*command, "6380"]) is not None


NOT_UTF8 = b"\xff\xfe"


async def test_a_field_that_is_not_utf8_in_a_shared_hash_stops_nothing(valkey_client: Any) -> None:
    """The tool policies hash and ``__betterdb:caches`` are written by other programs too (BetterDB Monitor, the
    reference package, other BetterDB caches). One field name that is not UTF-8 raised a bare UnicodeDecodeError in
    the background upkeep, which ended it for good (no more counter flushes, heartbeats or config refreshes), and in
    ``stats()``."""
    await valkey_client.hset("review_bytes:__tool_policies", NOT_UTF8, '{"ttl": 60}')
    cache = AgentCache(
        client=valkey_client,
        name="review_bytes",
        discovery=DiscoveryOptions(enabled=False),
        stats_flush_interval_s=0.05,
    )
    for call in range(3):
        await cache.tool.check("search", {"q": call})

    async def flushed() -> bool:
        return await valkey_client.hget("review_bytes:__stats", "tool:misses") == b"3"

    for _ in range(500):  # the upkeep flushes the counters on its own (no stats() call, which also flushes)
        if await flushed():
            break
        await asyncio.sleep(0.01)
    assert await flushed(), "the upkeep never flushed the counters"
    assert (await cache.stats()).tool.misses == 3
    await cache.close()


def test_the_cli_reads_a_registry_holding_a_field_that_is_not_utf8(valkey_server: ServerHandle) -> None:
    """``agent-cache caches`` and ``stats`` read ``__betterdb:caches``, which every BetterDB product writes: a field
    that is not UTF-8 ended both in a traceback."""
    import valkey

    client = valkey.Valkey(host=valkey_server.host, port=valkey_server.port)
    try:
        client.hset("__betterdb:caches", NOT_UTF8, '{"type": "agent_cache"}')
        client.hset("__betterdb:caches", "review_cli", '{"type": "agent_cache", "prefix": "review_cli"}')
        client.hset("review_cli:__stats", "llm:hits", 2)
        for command in (["caches"], ["stats", "--name", "review_cli"]):
            result = agent_cache(*command, "--url", valkey_server.url)
            assert result.returncode == 0, result.stderr[-2000:]
            assert "Traceback" not in result.stderr
            assert "review_cli" in result.stdout
    finally:
        client.hdel("__betterdb:caches", NOT_UTF8, "review_cli")
        client.close()


def test_a_url_from_the_environment_is_named_as_such() -> None:
    """With $AGENT_CACHE_URL (no --url), a bad URL was reported as "--url '...'" — an option the user never typed —
    and a password in it drew the warning that --url is visible in the process list, which the environment is not."""
    bad = agent_cache("caches", env={"AGENT_CACHE_URL": "valkey://localhost:abc"})
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: $AGENT_CACHE_URL 'valkey://localhost:abc': the port must be"), bad.stderr
    # Nothing listens on port 1: it fails after the warning would have been printed.
    quiet = agent_cache("caches", env={"AGENT_CACHE_URL": "valkey://:secret@127.0.0.1:1"})
    assert quiet.returncode == 2 and "cannot reach Valkey" in quiet.stderr, quiet.stderr
    assert "process list" not in quiet.stderr and "secret" not in quiet.stderr
    typed = agent_cache("caches", "--url", "valkey://:secret@127.0.0.1:1")
    assert "process list" in typed.stderr  # typed on the command line: the warning stays


async def test_close_during_an_outage_ends_the_watcher_without_waiting_out_its_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Valkey unreachable the config watcher sleeps between attempts (0.5 s doubling to 30 s), and close()
    could not interrupt the sleep: it waited its whole grace (5 s) and then cancelled the watcher."""
    import agent_cache.cache as cache_module

    port = free_port()  # nothing listens there: every connection is refused at once
    registry = CollectorRegistry()
    client = Valkey(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    cache = AgentCache(
        client=client,
        name="review_outage",
        discovery=DiscoveryOptions(enabled=False),
        telemetry=TelemetryOptions(registry=registry),
    )
    await cache.tool.check("t", {})  # a miss with an error; upkeep and the watcher run

    def failures() -> float:
        labels = {"cache_name": "review_outage"}
        return registry.get_sample_value("agent_cache_config_refresh_failed_total", labels) or 0

    await _until(lambda: failures() >= 1, "the watcher lost its subscription and backed off")
    (watcher,) = [task for task in asyncio.all_tasks() if task.get_name() == "agent-cache config review_outage"]
    monkeypatch.setattr(cache_module, "_STOP_GRACE_S", 0.2)  # shorter than the first backoff (0.5 s)
    await cache.close()
    assert watcher.done() and not watcher.cancelled(), "close() had to cancel the watcher mid-backoff"
    await client.aclose()
