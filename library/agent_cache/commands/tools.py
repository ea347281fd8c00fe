"""``agent-cache tools``: ``tool_effectiveness()`` per tool, and the TTL change each recommendation suggests.

The recommendation is the library's (``agent_cache.stats.recommend``, the reference package's rule); the
suggested change is :func:`suggest`, a pure function of the tool's hit rate, TTL and number of calls.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Literal

from ..stats import DISABLE_BELOW, INCREASE_TTL_ABOVE, LONG_TTL_SECONDS, tool_effectiveness
from ..types import AgentCacheStats, Recommendation, ToolEffectivenessEntry, ToolStats
from ._connection import Session, add_connection_options, add_name_option, run_command
from ._readers import read_snapshot, resolve_name
from ._terminal import EXIT_CODES_HELP, ExitCode, dollars, literal, percent, print_json, table, ttl

MIN_TTL_S = 60
"""Suggestions never go below a minute: shorter than that, disabling the tool's cache is the honest advice."""
DISABLE_HIT_RATE = 0.1
"""Below this hit rate the cache costs a round trip and memory for almost nothing: suggest disabling it."""
DEFAULT_MIN_CALLS = 20

Action = Literal["wait", "increase_ttl", "keep", "decrease_ttl", "set_ttl", "disable"]

_RULE = f"""\
recommendation (the library's rule, from the hit rate h and the tool's TTL):
  increase_ttl             h > {INCREASE_TTL_ABOVE:.0%} and a TTL under {LONG_TTL_SECONDS // 3600} h
  optimal                  {DISABLE_BELOW:.0%} <= h <= {INCREASE_TTL_ABOVE:.0%}, or above with TTL >= 1 h or none
  decrease_ttl_or_disable  h < {DISABLE_BELOW:.0%}

suggested change (this command's rule):
  under --min-calls lookups  wait: too few calls to judge
  increase_ttl               double the TTL, at most {LONG_TTL_SECONDS} s (1 h): 300 s -> 600 s, 2400 s -> 3600 s
  optimal                    keep the TTL
  decrease_ttl_or_disable    h < {DISABLE_HIT_RATE:.0%}: disable caching the tool (cacheable: false);
                             no TTL: set one of 1 h (entries are rarely reused and never expire);
                             TTL over {MIN_TTL_S} s: halve it, not below {MIN_TTL_S} s; {MIN_TTL_S} s or less: disable
"""

_EXAMPLES = f"""\
{_RULE}
examples:
  agent-cache tools --url valkey://10.0.0.5:6379 --name support_bot
      one row per tool: calls, hit rate, TTL, dollars saved, recommendation, suggested change
  agent-cache tools --name support_bot --json | jq '.[] | select(.action == "disable") | .tool'
      the tools worth not caching at all
  agent-cache tools --name support_bot --min-calls 500
      only judge tools with at least 500 lookups

{EXIT_CODES_HELP} (3: no tool has been looked up in this cache)
"""


@dataclass(frozen=True)
class Suggestion:
    action: Action
    ttl: int | None
    """The TTL to set (seconds) for increase_ttl / decrease_ttl / set_ttl; the current one for keep."""
    text: str


def suggest(
    recommendation: Recommendation, hit_rate: float, ttl_s: int | None, calls: int, min_calls: int
) -> Suggestion:
    """The concrete change a recommendation asks for (see ``agent-cache tools --help`` for the rule)."""
    if calls < min_calls:
        return Suggestion("wait", ttl_s, f"wait: {calls} calls < --min-calls {min_calls}")
    if recommendation == "increase_ttl" and ttl_s is not None:
        longer = min(ttl_s * 2, LONG_TTL_SECONDS)
        return Suggestion("increase_ttl", longer, f"TTL {ttl(ttl_s)} -> {ttl(longer)}")
    if recommendation != "decrease_ttl_or_disable":
        return Suggestion("keep", ttl_s, "keep")
    if hit_rate < DISABLE_HIT_RATE:
        return Suggestion("disable", None, "disable (cacheable: false)")
    if ttl_s is None:
        return Suggestion("set_ttl", LONG_TTL_SECONDS, f"TTL none -> {ttl(LONG_TTL_SECONDS)}")
    if ttl_s <= MIN_TTL_S:
        return Suggestion("disable", None, "disable (cacheable: false)")
    shorter = max(ttl_s // 2, MIN_TTL_S)
    return Suggestion("decrease_ttl", shorter, f"TTL {ttl(ttl_s)} -> {ttl(shorter)}")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tools",
        help="per-tool effectiveness, recommendation and the TTL change it suggests",
        description="tool_effectiveness() for every tool of a cache: calls, hit rate, TTL, dollars saved, the "
        "library's recommendation and the concrete change it suggests. Apply a change with a tool policy in "
        "your AgentCache resource (agent-cache config apply) or cache.tool.set_policy().",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_name_option(parser)
    parser.add_argument(
        "--min-calls",
        type=int,
        default=DEFAULT_MIN_CALLS,
        metavar="N",
        help=f"suggest nothing for tools with fewer lookups than this (default: {DEFAULT_MIN_CALLS}), "
        "e.g. --min-calls 100",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list on stdout, e.g. --json | jq '.[0]'")
    add_connection_options(parser)
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class ToolRow:
    entry: ToolEffectivenessEntry
    counts: ToolStats
    advice: Suggestion

    @property
    def calls(self) -> int:
        return self.counts.hits + self.counts.misses

    def document(self) -> dict[str, Any]:
        changes_ttl = self.advice.action in ("increase_ttl", "decrease_ttl", "set_ttl")
        return {
            "tool": self.entry.tool,
            "calls": self.calls,
            "hits": self.counts.hits,
            "misses": self.counts.misses,
            "hit_rate": self.entry.hit_rate,
            "ttl": self.counts.ttl,
            "cost_saved": self.entry.cost_saved,
            "recommendation": self.entry.recommendation,
            "action": self.advice.action,
            "suggested_ttl": self.advice.ttl if changes_ttl else None,
            "suggestion": self.advice.text,
        }


def tool_rows(stats: AgentCacheStats, min_calls: int) -> list[ToolRow]:
    rows = []
    for entry in tool_effectiveness(stats):
        counts = stats.per_tool[entry.tool]
        advice = suggest(entry.recommendation, entry.hit_rate, counts.ttl, counts.hits + counts.misses, min_calls)
        rows.append(ToolRow(entry, counts, advice))
    return rows


def run(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        name = await resolve_name(session, args.name)
        snapshot = await read_snapshot(session, name)
        rows = tool_rows(snapshot.stats, args.min_calls)
        if args.json:
            print_json([row.document() for row in rows])
        elif rows:
            grid = table(
                f"Tools of cache {name} (biggest savings first)",
                "Tool",
                "Calls",
                "Hit rate",
                "TTL",
                "Saved",
                "Recommendation",
                "Suggested change",
                left=("Tool", "Recommendation", "Suggested change"),
            )
            for row in rows:
                grid.add_row(
                    literal(row.entry.tool),
                    f"{row.calls:,}",
                    percent(row.entry.hit_rate),
                    ttl(row.counts.ttl),
                    dollars(row.entry.cost_saved),
                    literal(row.entry.recommendation, _STYLE[row.entry.recommendation]),
                    row.advice.text,
                )
            session.out.print(grid)
        if not rows:
            session.empty_server_note()
            session.note(f"cache {name!r} has no tool counters: no tool has been looked up (or a wrong --name)")
            return ExitCode.NOTHING
        return ExitCode.OK

    return run_command(args, body)


_STYLE = {"increase_ttl": "yellow", "optimal": "green", "decrease_ttl_or_disable": "red"}
