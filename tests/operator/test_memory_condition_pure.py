"""The MemoryPolicy condition decided from each primary's INFO figures (pure: no Valkey, no API)."""

from __future__ import annotations

from agent_cache._memory import NodeMemory
from agent_cache_operator.memory_status import memory_condition

MIB = 1024 * 1024


def node(name: str, policy: str, max_mib: int) -> NodeMemory:
    return NodeMemory(name, 10 * MIB, max_mib * MIB, policy, 0, 0)


def test_one_noeviction_primary_of_a_cluster_is_enough_and_is_named() -> None:
    nodes = [node("a:1", "allkeys-lru", 100), node("b:1", "noeviction", 100), node("c:1", "allkeys-lru", 100)]
    condition = memory_condition(nodes, "valkey:6379")
    assert (condition.status, condition.reason) == ("False", "NoEviction")
    assert "(b:1)" in condition.message and "100 MiB" in condition.message


def test_no_limit_is_true_but_says_valkey_grows_unbounded() -> None:
    condition = memory_condition([node("a:1", "noeviction", 0)], "valkey:6379")
    assert (condition.status, condition.reason) == ("True", "NoMemoryLimit")
    assert "no maxmemory" in condition.message


def test_volatile_policies_warn_about_entries_without_a_ttl() -> None:
    condition = memory_condition([node("a:1", "volatile-lru", 64)], "valkey:6379")
    assert (condition.status, condition.reason) == ("True", "EvictsKeysWithTtl")
    assert "without one" in condition.message


def test_allkeys_policies_evict() -> None:
    nodes = [node("a:1", "allkeys-lfu", 64), node("b:1", "allkeys-lru", 128)]
    condition = memory_condition(nodes, "valkey:6379")
    assert (condition.status, condition.reason) == ("True", "EvictsWhenFull")
    assert "allkeys-lfu, allkeys-lru" in condition.message and "64 MiB" in condition.message
