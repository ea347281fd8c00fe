"""LangChain's own standard cache tests (``langchain-tests``), unmodified, against a real server.

The sync suite drives ``lookup``/``update``/``clear`` through a :class:`SyncAgentCache`; the async suite
drives ``alookup``/``aupdate``/``aclear`` through an :class:`AgentCache` on the test's loop, and once more
through a :class:`SyncAgentCache` from a foreign loop. Each runs on standalone Valkey, a Valkey Cluster
and Redis 7 (the ``backend_*`` fixtures' parameters).
"""

from __future__ import annotations

import pytest
from langchain_core.caches import BaseCache
from langchain_tests.integration_tests.cache import AsyncCacheTestSuite, SyncCacheTestSuite

from agent_cache import AgentCache, SyncAgentCache
from agent_cache.adapters.langchain import BetterDBLlmCache


class TestSyncSuite(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, sync_cache: SyncAgentCache) -> BaseCache:
        return BetterDBLlmCache(sync_cache)


class TestAsyncSuite(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, agent_cache: AgentCache) -> BaseCache:
        return BetterDBLlmCache(agent_cache)


class TestAsyncSuiteOverSyncFacade(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, standalone_sync_cache: SyncAgentCache) -> BaseCache:
        return BetterDBLlmCache(standalone_sync_cache)
