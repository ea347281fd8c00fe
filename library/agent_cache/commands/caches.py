"""``agent-cache caches``: every cache this Valkey knows about, from the discovery registry BetterDB Monitor reads.

Each running ``AgentCache`` (with discovery on, the default) writes its entry in ``__betterdb:caches`` and
refreshes ``__betterdb:heartbeat:{name}``; the heartbeat expires about a minute after the last instance stops,
so "alive" means some instance beat recently. Caches started with discovery off are not listed.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._keys import validate_cache_name
from ..config import InstanceRecord
from ._connection import Session, add_connection_options, run_command
from ._readers import CacheSnapshot, RegisteredCache, instances, read_registry, read_snapshot
from ._terminal import EXIT_CODES_HELP, ExitCode, dollars, literal, percent, print_json, table

_EXAMPLES = f"""\
examples:
  agent-cache caches --url valkey://10.0.0.5:6379
      one row per cache: heartbeat, live instances, config version, hit rates, dollars saved
  agent-cache caches --json | jq -r '.[] | select(.alive) | .name'
      the names of the caches with a live heartbeat

{EXIT_CODES_HELP} (3: no cache is registered in this Valkey)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "caches",
        help="every cache registered in this Valkey, with liveness and headline numbers",
        description="List every cache in this Valkey's discovery registry (__betterdb:caches): whether its "
        "heartbeat is alive, its live instances and the config version they run, hit rates and dollars saved. "
        "Needs read access to every cache's keys (the per-cache ACL of agent_cache.acl covers one cache).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list on stdout, e.g. --json | jq '.[0]'")
    add_connection_options(parser)
    parser.set_defaults(run=run)


def _is_agent_cache(entry: RegisteredCache) -> bool:
    if entry.metadata.get("type", "agent_cache") != "agent_cache":
        return False
    try:
        validate_cache_name(entry.name)
    except ValueError:
        return False
    return True


def cache_document(
    entry: RegisteredCache, snapshot: CacheSnapshot | None, records: list[InstanceRecord]
) -> dict[str, Any]:
    metadata = entry.metadata
    document: dict[str, Any] = {
        "name": entry.name,
        "type": metadata.get("type"),
        "alive": entry.alive,
        "last_beat": entry.last_beat,
        "package_version": metadata.get("version"),
        "started_at": metadata.get("started_at"),
        "hostname": metadata.get("hostname"),
        "pid": metadata.get("pid"),
    }
    if snapshot is not None:
        stats = snapshot.stats
        live = snapshot.live
        document.update(
            {
                "instances": len(records),
                "instances_on_config": sum(1 for r in records if live is not None and r.version == live.version),
                "config_version": live.version if live else None,
                "config_source": live.source if live else None,
                "llm": {"hits": stats.llm.hits, "misses": stats.llm.misses, "hit_rate": stats.llm.hit_rate},
                "tool": {"hits": stats.tool.hits, "misses": stats.tool.misses, "hit_rate": stats.tool.hit_rate},
                "cost_saved": stats.cost_saved,
            }
        )
    return document


def run(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        registry = await read_registry(session.backend)
        documents = []
        for entry in registry.values():
            if _is_agent_cache(entry):
                snapshot = await read_snapshot(session, entry.name, registry)
                documents.append(cache_document(entry, snapshot, await instances(session, entry.name)))
            else:
                documents.append(cache_document(entry, None, []))
        if args.json:
            print_json(documents)
        elif documents:
            _render(session, documents)
        if not documents:
            session.empty_server_note()
            session.note(
                "no cache is registered in this Valkey (__betterdb:caches is empty): none has run here with "
                "discovery enabled"
            )
            return ExitCode.NOTHING
        return ExitCode.OK

    return run_command(args, body)


def _render(session: Session, documents: list[dict[str, Any]]) -> None:
    grid = table(
        f"Caches registered on {session.where}",
        "Cache",
        "Heartbeat",
        "Instances",
        "Config",
        "LLM hit rate",
        "Tool hit rate",
        "Saved",
        "Version",
        left=("Cache", "Heartbeat", "Config", "Version"),
    )
    for doc in documents:
        heartbeat = literal("alive", "green") if doc["alive"] else literal("none", "red")
        if "llm" not in doc:  # another kind of cache in the same registry (e.g. a semantic cache)
            grid.add_row(literal(doc["name"]), heartbeat, "", literal(str(doc["type"]), "dim"), "", "", "", "")
            continue
        llm, tool = doc["llm"], doc["tool"]
        config = "—" if doc["config_version"] is None else f"{doc['config_version']}"
        grid.add_row(
            literal(doc["name"]),
            heartbeat,
            f"{doc['instances_on_config']}/{doc['instances']}" if doc["config_version"] else str(doc["instances"]),
            literal(config),
            percent(llm["hit_rate"] if llm["hits"] + llm["misses"] else None),
            percent(tool["hit_rate"] if tool["hits"] + tool["misses"] else None),
            dollars(doc["cost_saved"]),
            literal(str(doc["package_version"] or "?")),
        )
    session.out.print(grid)
    session.out.print("Instances: live instances (on the config version / all, when a live config is set)", style="dim")
