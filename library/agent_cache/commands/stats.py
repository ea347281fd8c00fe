"""``agent-cache stats``: a cache's counters — hit rates per tier, tool and tenant, session traffic, dollars saved.

The same numbers as ``await cache.stats()``, read from the ``{name}:__stats`` hash every instance flushes
into, so they cover all of the cache's processes (each buffers at most about a second of counts).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..types import AgentCacheStats, TierStats
from ._connection import Session, add_connection_options, add_name_option, run_command
from ._readers import CacheSnapshot, read_snapshot, resolve_name
from ._terminal import EXIT_CODES_HELP, ExitCode, dollars, literal, percent, print_json, table, ttl

_EXAMPLES = f"""\
examples:
  agent-cache stats --url valkey://10.0.0.5:6379 --name support_bot
      tables: hits, misses and hit rate per tier and per tool, session reads/writes, dollars saved
  agent-cache stats --name support_bot --tenants
      also a row per tenant: lookups made inside cache.tenant(...), their hit rates and dollars saved
  agent-cache stats --name support_bot --json | jq .llm.hit_rate
      the same as JSON (field names of AgentCacheStats, per_tenant included) for scripts and dashboards
  VALKEY_PASSWORD=... agent-cache stats --url rediss://cache.internal:6380 --password-env VALKEY_PASSWORD
      a password-protected TLS server

{EXIT_CODES_HELP} (3: the cache has no counters — nothing recorded yet, or no such cache)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stats",
        help="hit rates per tier and tool, session reads/writes, dollars saved",
        description="A cache's counters: hit rates per tier and per tool, session reads and writes, dollars saved.\n"
        "They cover every process of the cache (each flushes its counters into {name}:__stats every second).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_name_option(parser)
    parser.add_argument(
        "--json", action="store_true", help="print JSON on stdout instead of tables, e.g. --json | jq .cost_saved"
    )
    parser.add_argument(
        "--tenants",
        action="store_true",
        help="also a table per tenant (lookups inside cache.tenant(...)), e.g. --tenants --name support_bot",
    )
    add_connection_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        name = await resolve_name(session, args.name)
        snapshot = await read_snapshot(session, name)
        if args.json:
            print_json(stats_document(name, snapshot.stats))
        elif snapshot.exists:  # a table of zeros would suggest a cache that exists but saw no traffic
            render(session, snapshot, tenants=args.tenants)
        if not snapshot.has_stats:
            session.empty_server_note()
            if snapshot.exists:
                session.note(f"cache {name!r} has no counters yet ({name}:__stats is absent): nothing recorded so far")
            else:
                session.note(
                    f"no cache named {name!r} in this Valkey: no counters, no discovery entry, no live config "
                    "(check --name; 'agent-cache caches' lists the registered ones)"
                )
            return ExitCode.NOTHING
        return ExitCode.OK

    return run_command(args, body)


def _tier(stats: TierStats) -> dict[str, Any]:
    return {"hits": stats.hits, "misses": stats.misses, "hit_rate": stats.hit_rate}


def stats_document(name: str, stats: AgentCacheStats) -> dict[str, Any]:
    """JSON of ``AgentCacheStats``, with the rates and dollars spelled out."""
    return {
        "name": name,
        "llm": _tier(stats.llm),
        "tool": _tier(stats.tool),
        "session": {"reads": stats.session.reads, "writes": stats.session.writes},
        "cost_saved": stats.cost_saved,
        "cost_saved_micros": stats.cost_saved_micros,
        "per_tool": {
            tool: {
                "hits": s.hits,
                "misses": s.misses,
                "hit_rate": s.hit_rate,
                "ttl": s.ttl,
                "cost_saved": s.cost_saved_micros / 1_000_000,
                "cost_saved_micros": s.cost_saved_micros,
            }
            for tool, s in stats.per_tool.items()
        },
        "per_tenant": {
            tenant: {
                "llm": _tier(s.llm),
                "tool": _tier(s.tool),
                "cost_saved": s.cost_saved,
                "cost_saved_micros": s.cost_saved_micros,
            }
            for tenant, s in stats.per_tenant.items()
        },
    }


def headline(snapshot: CacheSnapshot, where: str) -> str:
    parts = [f"Cache {snapshot.name} on {where}"]
    registered = snapshot.registered
    if registered is not None:
        parts.append("heartbeat alive" if registered.alive else "no heartbeat (no instance running?)")
    if snapshot.live is not None:
        parts.append(f"live config {snapshot.live.version}")
    elif snapshot.live_error:
        parts.append(f"live config MALFORMED ({snapshot.live_error})")
    return " · ".join(parts)


def render(session: Session, snapshot: CacheSnapshot, tenants: bool = False) -> None:
    stats = snapshot.stats
    out = session.out
    out.print(headline(snapshot, session.where), markup=False)
    out.print()
    tiers = table("Cache hits by tier", "Tier", "Hits", "Misses", "Hit rate", left=("Tier",))
    for label, tier in (("LLM", stats.llm), ("Tool", stats.tool)):
        tiers.add_row(label, f"{tier.hits:,}", f"{tier.misses:,}", percent(tier.hit_rate if tier.total else None))
    out.print(tiers)
    out.print()
    out.print(f"[bold]Session[/]  {stats.session.reads:,} reads · {stats.session.writes:,} writes")
    out.print(
        f"[bold]Saved[/]    [green]{dollars(stats.cost_saved)}[/] (LLM hits priced from the cost table + tool fees)"
    )
    if stats.per_tool:
        out.print()
        tools = table("Tools", "Tool", "Calls", "Hits", "Misses", "Hit rate", "TTL", "Saved", left=("Tool",))
        ranked = sorted(stats.per_tool.items(), key=lambda item: (-(item[1].hits + item[1].misses), item[0]))
        for tool, s in ranked:
            tools.add_row(
                literal(tool),
                f"{s.hits + s.misses:,}",
                f"{s.hits:,}",
                f"{s.misses:,}",
                percent(s.hit_rate),
                ttl(s.ttl),
                dollars(s.cost_saved_micros / 1_000_000),
            )
        out.print(tools)
    if stats.per_tenant and not tenants:
        out.print()
        out.print(f"{len(stats.per_tenant):,} tenants counted: --tenants shows a row for each", markup=False)
    elif stats.per_tenant:
        out.print()
        _render_tenants(session, stats)


def _render_tenants(session: Session, stats: AgentCacheStats) -> None:
    rows = table(
        "Tenants",
        "Tenant",
        "LLM hits",
        "LLM misses",
        "LLM hit rate",
        "Tool hits",
        "Tool misses",
        "Saved",
        left=("Tenant",),
    )
    ranked = sorted(stats.per_tenant.items(), key=lambda item: (-(item[1].llm.total + item[1].tool.total), item[0]))
    for tenant, s in ranked:
        rows.add_row(
            literal(tenant),
            f"{s.llm.hits:,}",
            f"{s.llm.misses:,}",
            percent(s.llm.hit_rate if s.llm.total else None),
            f"{s.tool.hits:,}",
            f"{s.tool.misses:,}",
            dollars(s.cost_saved),
        )
    session.out.print(rows)
