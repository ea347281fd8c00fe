"""``langgraph-checkpoint-conformance`` against :class:`BetterDBSaver` on a real server.

The suite calls the saver's async methods; it runs once with an :class:`AgentCache` on standalone
Valkey, a Valkey Cluster and Redis 7, and once with a :class:`SyncAgentCache` (async calls bridged to
the facade's loop). Every base capability and every extended one the saver implements must pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES, EXTENDED_CAPABILITIES
from langgraph.checkpoint.conformance.report import CapabilityReport

from agent_cache import AgentCache, SyncAgentCache
from agent_cache.adapters.langgraph import BetterDBSaver


def assert_full_conformance(report: CapabilityReport) -> None:
    failures = {name: result.failures for name, result in report.results.items() if result.failures}
    assert report.passed_all_base(), failures
    for capability in BASE_CAPABILITIES | EXTENDED_CAPABILITIES:
        result = report.results[capability.value]
        assert result.detected, f"{capability.value} is not implemented"
        assert result.passed is True and result.tests_failed == 0, (capability.value, result.failures)
    assert report.conformance_level() == "FULL"


async def test_conformance_with_async_cache(agent_cache: AgentCache) -> None:
    @checkpointer_test(name="BetterDBSaver")
    async def saver() -> AsyncIterator[BaseCheckpointSaver[str]]:
        yield BetterDBSaver(agent_cache)

    report = await validate(saver)
    report.print_report()
    assert_full_conformance(report)


async def test_conformance_with_sync_facade(standalone_sync_cache: SyncAgentCache) -> None:
    @checkpointer_test(name="BetterDBSaver over SyncAgentCache")
    async def saver() -> AsyncIterator[BaseCheckpointSaver[str]]:
        yield BetterDBSaver(standalone_sync_cache)

    report = await validate(saver)
    report.print_report()
    assert_full_conformance(report)


async def test_conformance_with_a_thread_ttl(agent_cache: AgentCache) -> None:
    @checkpointer_test(name="BetterDBSaver ttl=3600")
    async def saver() -> AsyncIterator[BaseCheckpointSaver[str]]:
        yield BetterDBSaver(agent_cache, ttl=3600)

    assert_full_conformance(await validate(saver))
