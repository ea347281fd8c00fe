"""The INFO parser behind the Valkey memory metrics: raw text and client-parsed replies, missing and bad fields."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from agent_cache import ValkeyCommandError
from agent_cache._memory import MemoryInfoError, MemoryWatch, NodeMemory, node_memory, parse_info_text, read_memory
from agent_cache.telemetry import Telemetry

RAW = (
    "# Memory\r\n"
    "used_memory:1048576\r\n"
    "used_memory_human:1.00M\r\n"
    "maxmemory:2097152\r\n"
    "maxmemory_policy:allkeys-lru\r\n"
    "\r\n"
    "# Stats\r\n"
    "evicted_keys:12\r\n"
    "expired_keys:34\r\n"
    "evicted_clients:0\r\n"
)


def test_raw_text_and_parsed_mapping_give_the_same_figures() -> None:
    expected = NodeMemory("10.0.0.1:6379", 1048576, 2097152, "allkeys-lru", 12, 34)
    assert node_memory("10.0.0.1:6379", RAW) == expected
    assert node_memory("10.0.0.1:6379", RAW.encode()) == expected
    parsed = {"used_memory": 1048576, "maxmemory": 2097152, "maxmemory_policy": "allkeys-lru"}
    assert node_memory("10.0.0.1:6379", {**parsed, "evicted_keys": 12, "expired_keys": 34}) == expected


def test_headers_blank_lines_and_colons_in_values() -> None:
    fields = parse_info_text("# Server\nexecutable:/usr/bin/valkey-server\n\nconfig_file:C:\\v.conf\n")
    assert fields == {"executable": "/usr/bin/valkey-server", "config_file": "C:\\v.conf"}


def test_missing_optional_fields_count_as_zero_and_unknown_policy() -> None:
    memory = node_memory("n", "used_memory:10\n")
    assert (memory.max_bytes, memory.policy, memory.evicted_keys, memory.expired_keys) == (0, "", 0, 0)


def test_a_reply_without_used_memory_names_the_node_and_field() -> None:
    with pytest.raises(MemoryInfoError, match="INFO of proxy:1 has no used_memory field"):
        node_memory("proxy:1", "# Stats\nevicted_keys:3\n")


def test_a_non_numeric_figure_names_the_field_and_value() -> None:
    with pytest.raises(MemoryInfoError, match=r"maxmemory is 'lots', not a number"):
        node_memory("n", "used_memory:10\nmaxmemory:lots\n")


def test_noeviction_fails_writes_only_with_a_limit() -> None:
    assert NodeMemory("n", 1, 100, "noeviction", 0, 0).fails_writes_when_full
    assert not NodeMemory("n", 1, 0, "noeviction", 0, 0).fails_writes_when_full  # no limit: grows instead
    assert not NodeMemory("n", 1, 100, "allkeys-lru", 0, 0).fails_writes_when_full


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def valkey_memory(self, *args: object) -> None:
        self.calls.append(("memory", *args))

    def forget_valkey_node(self, node: str, policy: str) -> None:
        self.calls.append(("forget", node, policy))


def test_key_counts_become_deltas_baseline_first_and_restarts_start_over() -> None:
    recorder = Recorder()
    watch = MemoryWatch(None, recorder, "c", 1.0)  # type: ignore[arg-type]  # _export needs no backend
    watch._export([NodeMemory("a", 5, 9, "allkeys-lru", 100, 50)])
    watch._export([NodeMemory("a", 6, 9, "allkeys-lfu", 130, 51), NodeMemory("b", 1, 9, "noeviction", 7, 7)])
    watch._export([NodeMemory("b", 1, 9, "noeviction", 2, 9)])  # b restarted; a left the cluster
    assert recorder.calls == [
        ("memory", "a", 5, 9, "allkeys-lru", None, 0, 0),
        ("memory", "a", 6, 9, "allkeys-lfu", "allkeys-lru", 30, 1),
        ("memory", "b", 1, 9, "noeviction", None, 0, 0),
        ("forget", "a", "allkeys-lfu"),
        ("memory", "b", 1, 9, "noeviction", "noeviction", 2, 2),
    ]


def test_interval_is_never_shorter_than_the_floor() -> None:
    assert MemoryWatch(None, Recorder(), "c", 0.05).interval_s == 10.0  # type: ignore[arg-type]
    assert MemoryWatch(None, Recorder(), "c", 30.0).interval_s == 30.0  # type: ignore[arg-type]


class OldServer:
    """What Redis 6 answers (its INFO takes one section): the backend's seam, as a pure stand-in."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    async def info(self, *sections: str) -> dict[str, str]:
        self.asked.append(sections)
        if len(sections) > 1:
            raise ValkeyCommandError("Valkey command INFO failed (ResponseError: syntax error)", command="INFO")
        return {"10.0.0.1:6379": "# Memory\nused_memory:5\nmaxmemory:9\nmaxmemory_policy:allkeys-lru\n"}


async def test_a_server_that_takes_one_info_section_gets_the_default_info() -> None:
    server = OldServer()
    assert await read_memory(server) == [NodeMemory("10.0.0.1:6379", 5, 9, "allkeys-lru", 0, 0)]  # type: ignore[arg-type]
    assert server.asked == [("memory", "stats"), ()]


def test_telemetry_keeps_one_policy_per_node_and_drops_a_node_that_left() -> None:
    registry = CollectorRegistry()
    watch = MemoryWatch(None, Telemetry("c", registry=registry), "c", 1.0)  # type: ignore[arg-type]
    watch._export([NodeMemory("a:1", 5, 9, "noeviction", 10, 1), NodeMemory("b:1", 5, 9, "noeviction", 0, 0)])
    watch._export([NodeMemory("a:1", 6, 9, "allkeys-lru", 15, 1), NodeMemory("b:1", 5, 9, "noeviction", 0, 0)])
    node_a = {"cache_name": "c", "node": "a:1"}
    assert (
        registry.get_sample_value("agent_cache_valkey_maxmemory_policy_info", {**node_a, "policy": "noeviction"})
        is None
    )
    assert (
        registry.get_sample_value("agent_cache_valkey_maxmemory_policy_info", {**node_a, "policy": "allkeys-lru"}) == 1
    )
    assert registry.get_sample_value("agent_cache_valkey_evicted_keys_total", node_a) == 5
    assert registry.get_sample_value("agent_cache_valkey_memory_used_bytes", node_a) == 6
    watch._export([NodeMemory("b:1", 5, 9, "noeviction", 0, 0)])  # a:1 failed over: its series go
    nodes = {s.labels["node"] for m in registry.collect() if m.name.startswith("agent_cache_valkey") for s in m.samples}
    assert nodes == {"b:1"}
