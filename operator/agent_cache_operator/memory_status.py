"""The ``MemoryPolicy`` condition: what the Valkey behind an AgentCache does when its memory is full.

Under ``maxmemory-policy noeviction`` with a ``maxmemory`` limit, a full Valkey refuses every write that needs
memory: the cache stops storing (its agents pay for every call) and the library's writes fail. An evicting policy
drops the least useful keys instead (``AgentCacheEvicting`` watches how often). The figures come from ``INFO`` (see
``agent_cache._memory``), which managed services serve where they refuse ``CONFIG``; the condition is decided
here, purely, and refreshed with the live stats.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent_cache import ValkeyCommandError
from agent_cache._backend import Backend
from agent_cache._memory import MemoryInfoError, NodeMemory, read_memory

from .status import Condition

MEMORY_POLICY = "MemoryPolicy"
_FIX = "set maxmemory-policy to allkeys-lru or allkeys-lfu (a managed service: in its parameter group)"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MiB"


def _nodes(nodes: Sequence[NodeMemory]) -> str:
    return ", ".join(node.node for node in nodes)


def memory_condition(nodes: Sequence[NodeMemory], endpoint: str) -> Condition:
    """``False`` when a primary fails writes once full (``noeviction`` with a limit), else ``True`` with what happens
    instead: evictions, evictions of keys with a TTL only, or no limit at all."""
    refusing = [node for node in nodes if node.fails_writes_when_full]
    if refusing:
        limit = _mib(min(node.max_bytes for node in refusing))
        return Condition(
            MEMORY_POLICY,
            "False",
            "NoEviction",
            f"Valkey at {endpoint} ({_nodes(refusing)}) runs maxmemory-policy noeviction with maxmemory {limit}: "
            f"once memory is full every write fails and the cache stops storing; {_FIX}",
        )
    limited = [node for node in nodes if node.max_bytes > 0]
    if not limited:
        return Condition(
            MEMORY_POLICY,
            "True",
            "NoMemoryLimit",
            f"Valkey at {endpoint} has no maxmemory: it grows until its machine runs out of memory; set maxmemory "
            f"and {_FIX.removeprefix('set ')}",
        )
    volatile = [node for node in limited if node.policy.startswith("volatile-")]
    if volatile:
        return Condition(
            MEMORY_POLICY,
            "True",
            "EvictsKeysWithTtl",
            f"Valkey at {endpoint} ({_nodes(volatile)}) runs maxmemory-policy {volatile[0].policy}: only keys with a "
            "TTL are evicted, so entries stored without one can fill memory and make writes fail",
        )
    policies = sorted({node.policy for node in limited})
    return Condition(
        MEMORY_POLICY,
        "True",
        "EvictsWhenFull",
        f"Valkey at {endpoint} runs maxmemory-policy {', '.join(policies)} with maxmemory "
        f"{_mib(min(node.max_bytes for node in limited))}: a full Valkey evicts entries (see AgentCacheEvicting)",
    )


async def read_memory_condition(backend: Backend, endpoint: str) -> Condition:
    """The condition from ``INFO`` now; ``Unknown`` when Valkey refuses INFO (an ACL without it). Connection
    errors and timeouts raise, like every other read of the live stats."""
    try:
        nodes = await read_memory(backend)
    except (MemoryInfoError, ValkeyCommandError) as exc:
        return Condition(
            MEMORY_POLICY,
            "Unknown",
            "InfoUnavailable",
            f"could not read INFO from Valkey at {endpoint} ({exc}); the operator's Valkey user needs the info command",
        )
    return memory_condition(nodes, endpoint)
