"""Discovery for BetterDB Monitor: a registry entry in ``__betterdb:caches`` and a heartbeat key.

The reference package passes ``'EX'`` positionally to ``SET`` and never writes its heartbeat; ours is a
real ``SET ... EX`` refreshed on an interval. All instances of one cache beat the same key; close deletes it
only while it holds this instance's last beat, so one pod's close never hides the pods still running.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ._backend import Backend
from ._errors import NameCollisionError
from ._scripts import RELEASE_LOCK

REGISTRY_KEY = "__betterdb:caches"
PROTOCOL_KEY = "__betterdb:protocol"
HEARTBEAT_PREFIX = "__betterdb:heartbeat:"
PROTOCOL_VERSION = 1
CACHE_TYPE = "agent_cache"
TOOL_POLICIES_LIMIT = 500


def package_version() -> str:
    try:
        return version("agent-cache")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "0.0.0"


def build_metadata(
    *,
    name: str,
    tier_ttls: dict[str, int | None],
    tool_policy_names: Sequence[str],
    has_cost_table: bool,
    uses_default_cost_table: bool,
    started_at: str,
) -> dict[str, Any]:
    """The registry entry, field for field what BetterDB Monitor expects."""
    metadata: dict[str, Any] = {
        "type": CACHE_TYPE,
        "prefix": name,
        "version": package_version(),
        "protocol_version": PROTOCOL_VERSION,
        "capabilities": ["tool_ttl_adjust", "invalidate_by_tool", "tool_effectiveness"],
        "stats_key": f"{name}:__stats",
        "tiers": {
            tier: {"enabled": True, **({"ttl_default": ttl} if ttl is not None else {})}
            for tier, ttl in tier_ttls.items()
        },
        "has_cost_table": has_cost_table,
        "uses_default_cost_table": uses_default_cost_table,
        "started_at": started_at,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "tool_policies": list(tool_policy_names[:TOOL_POLICIES_LIMIT]),
    }
    if len(tool_policy_names) > TOOL_POLICIES_LIMIT:
        metadata["tool_policies_truncated"] = True
    return metadata


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Discovery:
    def __init__(self, backend: Backend, name: str, heartbeat_interval_s: float) -> None:
        """``heartbeat_interval_s``: how often the caller will call :meth:`beat`."""
        self._backend = backend
        self._name = name
        self.heartbeat_key = HEARTBEAT_PREFIX + name
        # The heartbeat outlives two missed beats, so one slow tick doesn't make the cache look dead.
        self._heartbeat_ttl = max(1, round(heartbeat_interval_s * 2))
        self._last_beat: str | None = None  # the value this instance wrote last

    async def check_collision(self) -> None:
        existing = await self._backend.command("HGET", REGISTRY_KEY, self._name)
        if existing is None:
            return
        try:
            kind = json.loads(existing).get("type")
        except (ValueError, AttributeError):
            return
        if kind and kind != CACHE_TYPE:
            raise NameCollisionError(
                f"cache name {self._name!r} is already registered as a {kind!r} on this Valkey; choose another name"
            )

    async def beat(self, metadata: dict[str, Any]) -> None:
        self._last_beat = beat = now_iso()
        await self._backend.pipeline(
            [
                ("HSET", (REGISTRY_KEY, self._name, json.dumps(metadata, separators=(",", ":")))),
                ("SET", (PROTOCOL_KEY, str(PROTOCOL_VERSION), "NX")),
                ("SET", (self.heartbeat_key, beat, "EX", self._heartbeat_ttl)),
            ]
        )

    async def stop(self) -> None:
        """Remove the heartbeat if it is still this instance's: every pod of a cache beats the same key, and
        one pod leaving must not make the others look dead (a newer beat is theirs: it stays)."""
        if self._last_beat is not None:
            # Compare-and-delete: the lock release script does exactly that (DEL only if the value is ours).
            await self._backend.run_script(RELEASE_LOCK, (self.heartbeat_key,), (self._last_beat,))
