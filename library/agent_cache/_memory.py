"""Valkey's memory and eviction figures, read from ``INFO`` for the metrics and the operator's status.

A cache that Valkey evicts from silently looks like a bad hit rate; these figures say why. One ``INFO memory stats``
per primary (its ``memory`` section has ``used_memory``, ``maxmemory`` and ``maxmemory_policy``; its ``stats``
section ``evicted_keys`` and ``expired_keys``): never ``CONFIG GET``, which managed services (ElastiCache, MemoryDB,
Memorystore) refuse. The figures are the server's, shared by every cache on it.

:class:`MemoryWatch` reads them from the upkeep loop at most every :data:`READ_INTERVAL_S` (never per request). A
server that refuses ``INFO`` (an ACL without it, a proxy) is logged once and its metrics stay absent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._backend import Backend, as_text
from ._errors import ValkeyCommandError

log = logging.getLogger("agent_cache")

READ_INTERVAL_S = 10.0  # the figures move slowly; at most one INFO per primary this often, per process
RETRY_REFUSED_S = 300.0  # after a refusal (its ACL may be fixed), quietly try again this often
NO_EVICTION = "noeviction"


class MemoryInfoError(ValueError):
    """An INFO reply without the memory figures (a proxy or an old server that leaves them out)."""


@dataclass(frozen=True)
class NodeMemory:
    """One primary's figures. ``max_bytes`` 0 means no limit; the key counts are totals since the server started."""

    node: str
    used_bytes: int
    max_bytes: int
    policy: str
    evicted_keys: int
    expired_keys: int

    @property
    def fails_writes_when_full(self) -> bool:
        """``noeviction`` with a limit: once ``used`` reaches ``max``, every write that needs memory fails."""
        return self.policy == NO_EVICTION and self.max_bytes > 0


def parse_info_text(text: str | bytes) -> dict[str, str]:
    """The ``field:value`` lines of a raw INFO reply (``# Section`` headers and blank lines skipped)."""
    fields: dict[str, str] = {}
    for line in as_text(text).splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            name, value = line.split(":", 1)
            fields[name] = value
    return fields


def _count(fields: Mapping[str, Any], name: str, node: str, *, required: bool = False) -> int:
    value = fields.get(name)
    if value is None:
        if required:
            raise MemoryInfoError(f"INFO of {node} has no {name} field")
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MemoryInfoError(f"INFO of {node}: {name} is {value!r}, not a number") from None


def node_memory(node: str, reply: Mapping[str, Any] | str | bytes) -> NodeMemory:
    """The figures of one node from its INFO reply: a client's parsed mapping or the raw text."""
    fields: Mapping[str, Any] = reply if isinstance(reply, Mapping) else parse_info_text(reply)
    policy = fields.get("maxmemory_policy")
    return NodeMemory(
        node=node,
        used_bytes=_count(fields, "used_memory", node, required=True),
        max_bytes=_count(fields, "maxmemory", node),
        policy="" if policy is None else as_text(policy) if isinstance(policy, bytes) else str(policy),
        evicted_keys=_count(fields, "evicted_keys", node),
        expired_keys=_count(fields, "expired_keys", node),
    )


async def read_memory(backend: Backend) -> list[NodeMemory]:
    """One ``INFO memory stats`` per primary, parsed; raises our backend errors or :class:`MemoryInfoError`."""
    try:
        replies = await backend.info("memory", "stats")
    except ValkeyCommandError as exc:
        if "syntax error" not in str(exc).lower():
            raise
        # Redis before 7.0 (still common on managed services) takes one section; its default INFO has both.
        replies = await backend.info()
    return sorted((node_memory(node, reply) for node, reply in replies.items()), key=lambda n: n.node)


class MemoryListener(Protocol):
    """Where the figures go (``Telemetry``): per node, keys removed since the last reading as deltas."""

    def valkey_memory(
        self, node: str, used: int, maximum: int, policy: str, previous_policy: str | None, evicted: int, expired: int
    ) -> None: ...

    def forget_valkey_node(self, node: str, policy: str) -> None: ...


class MemoryWatch:
    """Reads the figures at most every ``interval_s`` and hands them to ``listener`` as gauges and counter deltas.

    The key counts become per-process counters: the first reading of a node is the baseline (0), later ones add
    what the server removed since, and a server restart (its totals drop) starts over from its new totals.
    """

    def __init__(self, backend: Backend, listener: MemoryListener, cache_name: str, interval_s: float) -> None:
        self._backend = backend
        self._listener = listener
        self._cache_name = cache_name
        self.interval_s = max(READ_INTERVAL_S, interval_s)
        self._next_read = 0.0
        self._refused = False
        self._last: dict[str, NodeMemory] = {}

    async def read_if_due(self, now: float) -> None:
        """Read and export when the interval has passed (``now``: monotonic seconds). Backend outages raise."""
        if now < self._next_read:
            return
        self._next_read = now + (RETRY_REFUSED_S if self._refused else self.interval_s)
        try:
            nodes = await read_memory(self._backend)
        except (ValkeyCommandError, MemoryInfoError) as exc:
            if not self._refused:
                log.warning(
                    "agent-cache %s: Valkey's memory figures are unavailable, their metrics stay absent "
                    "(grant INFO, see acl_rule()): %s",
                    self._cache_name,
                    exc,
                )
                self._refused = True
                self._next_read = now + RETRY_REFUSED_S
            return
        self._refused = False
        self._export(nodes)

    def _export(self, nodes: list[NodeMemory]) -> None:
        current = {node.node: node for node in nodes}
        for name, gone in self._last.items():
            if name not in current:  # a failover or a resharding took it away: its series go too
                self._listener.forget_valkey_node(name, gone.policy)
        for node in nodes:
            last = self._last.get(node.node)
            evicted = expired = 0
            if last is not None:
                evicted = _delta(last.evicted_keys, node.evicted_keys)
                expired = _delta(last.expired_keys, node.expired_keys)
            self._listener.valkey_memory(
                node.node,
                node.used_bytes,
                node.max_bytes,
                node.policy,
                None if last is None else last.policy,
                evicted,
                expired,
            )
        self._last = current


def _delta(before: int, now: int) -> int:
    return now - before if now >= before else now  # lower than before: the server restarted and counts anew
