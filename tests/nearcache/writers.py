"""A second process's cache for near-cache tests: its own thread, event loop, client and ``AgentCache``.

``call(fn)`` runs ``fn(cache, client)`` there and returns its result to the calling loop: that return is
the signal "my write is done", after which the reader reads at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from agent_cache import AgentCache

CacheFactory = Callable[[], tuple[AgentCache, Any]]


class WriterThread:
    def __init__(self, make: CacheFactory) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="near-cache writer", daemon=True)
        self._thread.start()
        self.cache, self.client = self._run(self._make(make))

    @staticmethod
    async def _make(make: CacheFactory) -> tuple[AgentCache, Any]:
        return make()

    def _run(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)  # type: ignore[arg-type]

    async def call(self, fn: Callable[[AgentCache, Any], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            return await fn(self.cache, self.client)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._loop))

    def close(self) -> None:
        async def close() -> None:
            await self.cache.close()
            await self.client.aclose()

        try:
            self._run(close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
