"""Reading a cache from outside its processes: counters, discovery entry, live config, tool TTLs, index sizes.

The subcommands look at Valkey the way BetterDB Monitor does — the ``{name}:__stats`` hash, the
``__betterdb:caches`` registry and heartbeats, the live config — with read commands the cache's own ACL
allows. A tool's TTL is what its instances would use: the tool's policy (live config, then the policies
hash), else the live config's tool tier TTL (or its ``defaultTTL``), else the tier TTL the instances report in
the discovery registry (their code's ``tier_defaults``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._backend import Backend, as_text
from .._discovery import HEARTBEAT_PREFIX, REGISTRY_KEY
from .._errors import AgentCacheUsageError, ConfigurationError
from .._keys import KeyLayout, validate_cache_name
from ..config import AppliedConfig, InstanceRecord, list_instances, read_config
from ..stats import parse_stats
from ..tiers.tool import parse_policy
from ..types import AgentCacheStats
from ._connection import NAME_ENV, Session

DEFAULT_NAME = "betterdb_ac"
_PAGE = 1000


@dataclass(frozen=True)
class RegisteredCache:
    """One entry of the discovery registry, and whether its heartbeat is still there."""

    name: str
    metadata: Mapping[str, Any]
    last_beat: str | None
    """ISO time of the last heartbeat; None when the heartbeat key expired (no instance alive)."""

    @property
    def alive(self) -> bool:
        return self.last_beat is not None

    def tier_ttl(self, tier: str) -> int | None:
        tiers = self.metadata.get("tiers")
        settings = tiers.get(tier) if isinstance(tiers, Mapping) else None
        value = settings.get("ttl_default") if isinstance(settings, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None


async def read_registry(backend: Backend) -> dict[str, RegisteredCache]:
    raw = await backend.command("HGETALL", REGISTRY_KEY) or {}
    entries = {as_text(name): as_text(value) for name, value in _pairs(raw)}
    names = sorted(entries)
    beats = await backend.pipeline([("GET", (HEARTBEAT_PREFIX + name,)) for name in names]) if names else []
    registered = {}
    for name, beat in zip(names, beats, strict=True):
        try:
            metadata = json.loads(entries[name])
        except ValueError:
            metadata = {}
        registered[name] = RegisteredCache(
            name, metadata if isinstance(metadata, dict) else {}, None if beat is None else as_text(beat)
        )
    return registered


async def resolve_name(session: Session, given: str | None) -> str:
    """--name, else $AGENT_CACHE_NAME, else the only registered cache, else the library's default name."""
    if given:
        return validate_cache_name(given)
    from_env = os.environ.get(NAME_ENV)
    if from_env:
        return validate_cache_name(from_env)
    registered = await read_registry(session.backend)
    if len(registered) == 1:
        (name,) = registered
        session.note(f"cache: {name} (the only one in this Valkey's discovery registry; --name to choose another)")
        return name
    if registered:
        session.note(f"cache: {DEFAULT_NAME} (the default; caches registered here: {', '.join(registered)})")
    return DEFAULT_NAME


@dataclass
class CacheSnapshot:
    """Everything the inspection commands show about one cache, read at one moment."""

    name: str
    stats: AgentCacheStats
    has_stats: bool
    live: AppliedConfig | None
    live_error: str | None
    registered: RegisteredCache | None
    tool_ttls: dict[str, int | None] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.has_stats or self.registered is not None or self.live is not None


async def read_live_config(session: Session, name: str) -> tuple[AppliedConfig | None, str | None]:
    """The live config, or (None, why) when it is malformed (instances then keep their last good one)."""
    try:
        return await read_config(session.client, name), None
    except ConfigurationError as exc:
        return None, str(exc)


async def read_snapshot(
    session: Session, name: str, registry: Mapping[str, RegisteredCache] | None = None
) -> CacheSnapshot:
    keys = KeyLayout(name)
    raw_stats = await session.backend.command("HGETALL", keys.stats) or {}
    live, live_error = await read_live_config(session, name)
    if registry is None:
        registry = await read_registry(session.backend)
    registered = registry.get(name)
    raw_policies = await session.backend.command("HGETALL", keys.tool_policies) or {}
    ttl_of = _tool_ttl_resolver(_policy_ttls(raw_policies), live, registered)
    stats = parse_stats(dict(_pairs(raw_stats)), ttl_of)
    snapshot = CacheSnapshot(name, stats, bool(raw_stats), live, live_error, registered)
    snapshot.tool_ttls = {tool: s.ttl for tool, s in stats.per_tool.items()}
    return snapshot


def _policy_ttls(raw: Any) -> dict[str, int | None]:
    ttls = {}
    for field_name, value in _pairs(raw):
        tool = as_text(field_name)
        try:
            ttls[tool] = parse_policy(tool, value).ttl
        except AgentCacheUsageError:
            continue  # a malformed policy: its instances ignore it too
    return ttls


def _tool_ttl_resolver(
    hash_policies: Mapping[str, int | None], live: AppliedConfig | None, registered: RegisteredCache | None
) -> Callable[[str], int | None]:
    live_policies = live.config.tool_policies if live else {}
    # The live config beats the code's defaults; the registry reports the instances' effective tier TTL.
    tier_ttl = live.config.tiers.get("tool", live.config.default_ttl) if live else None
    if tier_ttl is None and registered is not None:
        tier_ttl = registered.tier_ttl("tool")

    def ttl_of(tool: str) -> int | None:
        policy = live_policies.get(tool)
        if policy is not None and policy.ttl is not None:
            return policy.ttl
        hashed = hash_policies.get(tool)
        return hashed if hashed is not None else tier_ttl

    return ttl_of


async def instances(session: Session, name: str) -> list[InstanceRecord]:
    return await list_instances(session.client, name)


async def live_index_members(backend: Backend, index: str, now_ms: float, prefix: str | None = None) -> int:
    """Members of an index sorted set whose entry has not expired (score = expiry in ms, ``inf`` = never).

    Expired members sort first and are few (every write prunes them), so this pages by rank from the start
    only until it reaches a live one: O(expired) reads, never a scan of the whole index. With ``prefix``
    (``prefix + member`` is the entry's key), a member whose score passed is checked with ``EXISTS``: a
    session read slides its field's TTL without moving the score (see ``_scripts``).
    """
    total = int(await backend.command("ZCARD", index))
    expired = 0
    start = 0
    while start < total:
        page = _pairs(await backend.command("ZRANGE", index, start, start + _PAGE - 1, "WITHSCORES"))
        scores = [float(score) for _, score in page]  # float() reads bytes, str and "inf" alike
        live_from = next((i for i, score in enumerate(scores) if score > now_ms or math.isinf(score)), len(scores))
        if prefix is not None and live_from:
            members = [as_text(member) for member, _ in page[:live_from]]
            alive = await backend.pipeline(("EXISTS", (prefix + member,)) for member in members)
            live_from -= sum(int(exists) for exists in alive)
        expired += live_from
        if len(scores) < _PAGE or scores[-1] > now_ms:
            break
        start += _PAGE
    return max(0, total - expired)


async def server_time_ms(backend: Backend) -> float:
    seconds, micros = await backend.command("TIME")
    return int(seconds) * 1000 + int(micros) / 1000


def _pairs(raw: Any) -> list[tuple[Any, Any]]:
    """A hash or WITHSCORES reply as pairs: a dict (decoded by the client) or a flat list."""
    if isinstance(raw, Mapping):
        return list(raw.items())
    items = list(raw or [])
    if items and isinstance(items[0], list | tuple):
        return [(item[0], item[1]) for item in items]
    return list(zip(items[::2], items[1::2], strict=True))
