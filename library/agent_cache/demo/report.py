"""What a demo run reports: the summary's fields, rich tables for people and JSON for tests and scripts.

rich is imported where tables are drawn, so the workload (and ``agent-cache --help``) works without the
``cli`` extra.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@dataclass(frozen=True)
class TierSummary:
    hits: int
    misses: int
    hit_rate: float
    latency_avoided_s: float
    """Simulated (speed 1) latency of the real calls the hits replaced."""


@dataclass(frozen=True)
class ModelSummary:
    model: str
    hits: int
    misses: int
    hit_rate: float
    input_tokens_saved: int
    output_tokens_saved: int


@dataclass(frozen=True)
class ToolSummary:
    tool: str
    hits: int
    misses: int
    hit_rate: float
    ttl: int | None
    cost_saved: float
    recommendation: str


@dataclass(frozen=True)
class SessionSummary:
    reads: int
    hits: int
    """Reads that found state (the rest found none: a new thread, or a field not written yet)."""
    writes: int
    threads_created: int
    threads_destroyed: int


@dataclass(frozen=True)
class DemoSummary:
    """What a run did. Hits, misses, reads and writes are this run's own observations; the dollars come
    from ``cache.stats()`` (priced from the cost table and the tools' declared fees)."""

    cache_name: str
    requests: int
    users: int
    seed: int
    speed: float
    wall_time_s: float
    llm: TierSummary
    tool: TierSummary
    session: SessionSummary
    models: list[ModelSummary]
    tools: list[ToolSummary]
    cost_saved: float
    cost_saved_micros: int
    latency_avoided_s: float
    hit_latency_p50_ms: float
    hit_latency_p99_ms: float
    hit_latency_samples: int


_ADVICE_STYLE = {"increase_ttl": "yellow", "optimal": "green", "decrease_ttl_or_disable": "red"}


def summary_json(summary: DemoSummary, **extra: Any) -> str:
    return json.dumps({**dataclasses.asdict(summary), **extra}, indent=2)


def dollars(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s"


def ttl(seconds: int | None) -> str:
    if seconds is None:
        return "none"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _percent(rate: float) -> str:
    return f"{rate:.1%}"


def compact_table(title: str | None, *columns: str, left: tuple[str, ...] = ()) -> Table:
    """Compact tables, so the report fits 80 columns (rich's width when stdout is not a terminal)."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def _tiers(summary: DemoSummary) -> Table:
    table = compact_table("Cache hits by tier", "Tier", "Hits", "Misses", "Hit rate", "Latency avoided", left=("Tier",))
    for name, tier in (("LLM", summary.llm), ("Tool", summary.tool)):
        table.add_row(
            name, f"{tier.hits:,}", f"{tier.misses:,}", _percent(tier.hit_rate), duration(tier.latency_avoided_s)
        )
        if tier is summary.llm:
            for model in summary.models:
                counts = (f"{model.hits:,}", f"{model.misses:,}", _percent(model.hit_rate))
                table.add_row(f"  {model.model}", *counts, "", style="dim")
    return table


def _tools(summary: DemoSummary) -> Table:
    columns = ("Tool", "Hits", "Misses", "Hit rate", "TTL", "Saved", "Recommendation")
    table = compact_table("Tool results", *columns, left=("Tool", "Recommendation"))
    for tool in summary.tools:
        advice = f"[{_ADVICE_STYLE.get(tool.recommendation, 'default')}]{tool.recommendation}[/]"
        counts = (f"{tool.hits:,}", f"{tool.misses:,}", _percent(tool.hit_rate))
        table.add_row(tool.tool, *counts, ttl(tool.ttl), dollars(tool.cost_saved), advice)
    return table


def _totals(summary: DemoSummary) -> Table:
    tool_saved = sum(t.cost_saved for t in summary.tools)
    llm_saved = summary.cost_saved - tool_saved
    tokens_in = sum(m.input_tokens_saved for m in summary.models)
    tokens_out = sum(m.output_tokens_saved for m in summary.models)
    session = summary.session
    rows = {
        "Saved": f"[bold green]{dollars(summary.cost_saved)}[/] = LLM calls {dollars(llm_saved)} "
        f"(cost table) + tool fees {dollars(tool_saved)}",
        "Tokens not sent": f"{tokens_in:,} input + {tokens_out:,} output",
        "Latency avoided": f"{duration(summary.latency_avoided_s)} of model and tool calls (at real-world speed)",
        "Session state": f"{session.reads:,} reads ({session.hits:,} found state), {session.writes:,} writes",
        "Threads": f"{session.threads_created:,} opened, "
        f"{session.threads_destroyed:,} destroyed when their conversation ended",
        "Wall time": f"{duration(summary.wall_time_s)} for {summary.requests:,} turns by {summary.users} users",
        "Cache hit latency": f"p50 {summary.hit_latency_p50_ms:.2f} ms, p99 {summary.hit_latency_p99_ms:.2f} ms "
        f"({summary.hit_latency_samples:,} hits timed)",
    }
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for label, value in rows.items():
        table.add_row(label, value)
    return table


def render(console: Console, summary: DemoSummary) -> None:
    for part in (_tiers(summary), _tools(summary), _totals(summary)):
        console.print(part)
        console.print()
