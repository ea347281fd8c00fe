"""``agent-cache top``: a live view of one cache, like ``htop`` — rates, hit rates, dollars per hour, top tools
and the instances with the config version each runs.

Rates are differences of the ``{name}:__stats`` counters between two refreshes divided by the time between
them (:func:`rates`, pure). Instances buffer up to a second of counts, so a rate over a short ``--interval``
is jumpy; 2 s (the default) or more reads steadily. On a pipe it prints one plain frame per refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..config import InstanceRecord
from ..types import AgentCacheStats
from ._connection import Session, add_connection_options, add_name_option, run_command
from ._readers import CacheSnapshot, instances, read_snapshot, resolve_name
from ._terminal import EXIT_CODES_HELP, ExitCode, dollars, literal, percent, table, ttl

if TYPE_CHECKING:
    from rich.console import Group

TOP_TOOLS = 10

_EXAMPLES = f"""\
examples:
  agent-cache top --url valkey://10.0.0.5:6379 --name support_bot
      refresh every 2 s until Ctrl-C
  agent-cache top --name support_bot --interval 10
      steadier rates over 10 s windows
  agent-cache top --name support_bot --iterations 3 --interval 5 > snapshot.txt
      three frames 5 s apart, as plain text (no terminal: one frame after another)

{EXIT_CODES_HELP} (Ctrl-C is the normal way out and exits 0)
"""


@dataclass(frozen=True)
class ToolRate:
    tool: str
    calls_per_s: float
    hit_rate: float | None
    """Over the interval; None when the tool had no calls in it."""
    saved_per_hour: float
    calls_total: int
    hit_rate_total: float
    ttl: int | None


@dataclass(frozen=True)
class Rates:
    seconds: float
    llm_per_s: float
    llm_hit_rate: float | None
    tool_per_s: float
    tool_hit_rate: float | None
    session_reads_per_s: float
    session_writes_per_s: float
    saved_per_hour: float
    tools: list[ToolRate]
    """Busiest in the interval first, then by calls in total."""


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total > 0 else None


def rates(before: AgentCacheStats, after: AgentCacheStats, seconds: float) -> Rates:
    """Per-second rates between two stats readings ``seconds`` apart.

    A counter that went down was reset (``flush`` in between): as Prometheus' ``rate()`` does, its whole new
    value counts as the increase.
    """

    def delta(now: int, then: int) -> int:
        return now - then if now >= then else now

    per_s = 1 / seconds if seconds > 0 else 0.0
    llm_hits = delta(after.llm.hits, before.llm.hits)
    llm_calls = llm_hits + delta(after.llm.misses, before.llm.misses)
    tool_hits = delta(after.tool.hits, before.tool.hits)
    tool_calls = tool_hits + delta(after.tool.misses, before.tool.misses)
    tools = []
    for name, now in after.per_tool.items():
        then = before.per_tool.get(name)
        hits = delta(now.hits, then.hits if then else 0)
        calls = hits + delta(now.misses, then.misses if then else 0)
        saved = delta(now.cost_saved_micros, then.cost_saved_micros if then else 0) / 1_000_000
        tools.append(
            ToolRate(
                name,
                calls * per_s,
                _ratio(hits, calls),
                saved * per_s * 3600,
                now.hits + now.misses,
                now.hit_rate,
                now.ttl,
            )
        )
    tools.sort(key=lambda t: (-t.calls_per_s, -t.calls_total, t.tool))
    saved = delta(after.cost_saved_micros, before.cost_saved_micros) / 1_000_000
    return Rates(
        seconds=seconds,
        llm_per_s=llm_calls * per_s,
        llm_hit_rate=_ratio(llm_hits, llm_calls),
        tool_per_s=tool_calls * per_s,
        tool_hit_rate=_ratio(tool_hits, tool_calls),
        session_reads_per_s=delta(after.session.reads, before.session.reads) * per_s,
        session_writes_per_s=delta(after.session.writes, before.session.writes) * per_s,
        saved_per_hour=saved * per_s * 3600,
        tools=tools,
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "top",
        help="live view: rates, hit rates, dollars saved per hour, top tools, instances",
        description="A live, refreshing view of one cache, like htop: requests per second and hit rate per tier "
        "(over the last interval and in total), session reads/writes per second, dollars saved per hour at the "
        "current rate, the busiest tools, and the instances of the cache with the config version each runs.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_name_option(parser)
    parser.add_argument(
        "--interval",
        type=_interval,
        default=2.0,
        metavar="SECONDS",
        help="time between refreshes, over which rates are computed (default: 2, at least 0.1), e.g. --interval 5",
    )
    parser.add_argument(
        "--iterations",
        type=_frames,
        default=None,
        metavar="K",
        help="stop after K frames (default: run until Ctrl-C); the first frame has totals only, rates start "
        "with the second, e.g. --iterations 2",
    )
    add_connection_options(parser)
    parser.set_defaults(run=run)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0.1:
        raise argparse.ArgumentTypeError(f"must be at least 0.1 seconds, got {text}")
    return value


def _frames(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        name = await resolve_name(session, args.name)
        await watch(session, name, args.interval, args.iterations)
        return ExitCode.OK

    try:
        return run_command(args, body)
    except KeyboardInterrupt:
        return ExitCode.OK


async def watch(session: Session, name: str, interval: float, iterations: int | None) -> None:
    from rich.live import Live

    previous: tuple[CacheSnapshot, float] | None = None
    frames = 0
    live = Live(console=session.out, auto_refresh=False) if session.out.is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            snapshot = await read_snapshot(session, name)
            records = await instances(session, name)
            now = time.monotonic()
            current = None if previous is None else rates(previous[0].stats, snapshot.stats, now - previous[1])
            frame = view(session, snapshot, current, records, interval)
            if live is not None:
                live.update(frame, refresh=True)
            else:
                session.out.print(frame)
                session.out.print()
            frames += 1
            if frames == 1 and not snapshot.exists:
                session.empty_server_note()
                if not session.embedded:
                    session.note(
                        f"note: nothing recorded for cache {name!r} yet; waiting for traffic (or check --name)"
                    )
            if iterations is not None and frames >= iterations:
                return
            previous = snapshot, now
            await asyncio.sleep(interval)
    finally:
        if live is not None:
            live.stop()


def _per_s(value: float) -> str:
    return f"{value:,.1f}/s"


def view(
    session: Session, snapshot: CacheSnapshot, current: Rates | None, records: list[InstanceRecord], interval: float
) -> Group:
    from rich.console import Group
    from rich.text import Text

    stats = snapshot.stats
    clock = datetime.now().strftime("%H:%M:%S")
    header = Text.assemble(
        ("agent-cache top", "bold"),
        f" · cache {snapshot.name} on {session.where} · every {interval:g} s · {clock} · Ctrl-C to quit",
    )
    window = f"last {current.seconds:.1f} s" if current else "measuring…"
    tiers = table(None, "Tier", "Requests", "Hit rate now", "Hit rate total", "Hits", "Misses", left=("Tier",))
    for label, tier, per_s, now_rate in (
        ("LLM", stats.llm, current.llm_per_s if current else None, current.llm_hit_rate if current else None),
        ("Tool", stats.tool, current.tool_per_s if current else None, current.tool_hit_rate if current else None),
    ):
        tiers.add_row(
            label,
            "—" if per_s is None else _per_s(per_s),
            percent(now_rate),
            percent(tier.hit_rate if tier.total else None),
            f"{tier.hits:,}",
            f"{tier.misses:,}",
        )
    session_line = f"[bold]Session[/]  {stats.session.reads:,} reads · {stats.session.writes:,} writes"
    saved_line = f"[bold]Saved[/]    [green]{dollars(stats.cost_saved)}[/] in total"
    if current:
        session_line += (
            f" · now {_per_s(current.session_reads_per_s)} reads, {_per_s(current.session_writes_per_s)} writes"
        )
        saved_line += f" · [green]{dollars(current.saved_per_hour)}/h[/] at the current rate"
    parts: list[Any] = [header, Text(f"Traffic ({window})", style="bold"), tiers, session_line, saved_line, ""]
    parts.append(_tools(snapshot, current))
    parts.append("")
    parts.append(_instances(snapshot, records))
    return Group(*parts)


def _tools(snapshot: CacheSnapshot, current: Rates | None) -> Any:
    from rich.text import Text

    stats = snapshot.stats
    if not stats.per_tool:
        return Text("Top tools: none looked up yet", style="dim")
    if current is None:
        ranked = rates(stats, stats, 0).tools  # by total calls until there is an interval to measure
    else:
        ranked = current.tools
    grid = table(
        f"Top tools (of {len(ranked)})",
        "Tool",
        "Calls",
        "Hit rate now",
        "Hit rate total",
        "TTL",
        "Saved/h",
        "Calls total",
        left=("Tool",),
    )
    for tool in ranked[:TOP_TOOLS]:
        grid.add_row(
            literal(tool.tool),
            _per_s(tool.calls_per_s) if current else "—",
            percent(tool.hit_rate),
            percent(tool.hit_rate_total if tool.calls_total else None),
            ttl(tool.ttl),
            f"{dollars(tool.saved_per_hour)}/h" if current else "—",
            f"{tool.calls_total:,}",
        )
    return grid


def _instances(snapshot: CacheSnapshot, records: list[InstanceRecord]) -> Any:
    from rich.console import Group
    from rich.text import Text

    live = snapshot.live
    if live is not None:
        title = f"Instances: {len(records)} live · config version {live.version} from {live.source or 'unknown'}"
    elif snapshot.live_error:
        title = f"Instances: {len(records)} live · live config MALFORMED, instances keep their last good one"
    else:
        title = f"Instances: {len(records)} live · no live config (code defaults)"
    if not records:
        return Text(title + " (instances report here when live config is enabled)", style="bold")
    grid = table(None, "Instance", "Host", "PID", "Config version", "Seen", left=("Instance", "Host", "Config version"))
    now = time.time()
    for record in records:
        if record.version is None:
            version = literal("(code defaults)", "yellow" if live else "")
        elif live is not None and record.version == live.version:
            version = literal(f"{record.version} ✓", "green")
        else:
            version = literal(f"{record.version} (behind)", "red")
        grid.add_row(
            literal(record.instance_id),
            literal(record.host),
            str(record.pid),
            version,
            f"{max(0, now - record.seen):.0f} s ago",
        )
    return Group(Text(title, style="bold"), grid)
