"""A blocking facade for code outside asyncio: :class:`SyncAgentCache`.

Why a thread of its own: asyncio connections belong to the event loop that opened them, so a sync API
cannot borrow the caller's loop (there may be none, or it may be busy running the caller). The facade
owns a private event loop on a daemon thread; the Valkey client and the :class:`AgentCache` are built
there (from a URL or a client factory) and every call is submitted to that loop. The caller's thread
only waits for the answer, which is why the sync API works the same from a plain script, from worker
threads and from inside a running event loop (it blocks that loop for the call, but cannot deadlock
it). Upkeep — counter flushes, live config, heartbeat — runs on the private loop.

Framework adapters take either cache: :func:`cache_runner` gives them one way to run a coroutine
against it from sync and async code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ParamSpec, Protocol, Self, TypeVar

from ._errors import AgentCacheUsageError
from ._keys import KeyLayout
from .cache import AgentCache
from .tiers._control import CacheControl, ControlScope
from .tiers._model_policy import ModelPolicy
from .tiers.llm import Computed
from .types import (
    AgentCacheOptions,
    AgentCacheStats,
    ContentBlock,
    LlmCacheResult,
    LlmStoreOptions,
    ToolCacheResult,
    ToolEffectivenessEntry,
    ToolPolicy,
    ToolStoreOptions,
)

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("agent_cache")

_CLOSE_TIMEOUT_S = 10.0


class CacheRunner(Protocol):
    """Runs ``call(agent_cache)`` where the cache's client lives: from sync code and from async code."""

    def run(self, call: Callable[[AgentCache], Awaitable[T]]) -> T: ...

    async def arun(self, call: Callable[[AgentCache], Awaitable[T]]) -> T: ...


class _AsyncCacheRunner:
    """An :class:`AgentCache` lives on its caller's loop: async calls await it, sync calls cannot."""

    def __init__(self, cache: AgentCache) -> None:
        self.cache = cache

    def run(self, call: Callable[[AgentCache], Awaitable[T]]) -> T:
        raise AgentCacheUsageError(
            "this adapter wraps an async AgentCache, so only its async methods work (ainvoke, astream, "
            "aget_tuple...); for sync calls build it on agent_cache.SyncAgentCache(url) instead"
        )

    async def arun(self, call: Callable[[AgentCache], Awaitable[T]]) -> T:
        return await call(self.cache)


def cache_runner(cache: AgentCache | SyncAgentCache) -> CacheRunner:
    if isinstance(cache, SyncAgentCache):
        return cache
    if isinstance(cache, AgentCache):
        return _AsyncCacheRunner(cache)
    raise AgentCacheUsageError(f"cache must be an AgentCache or a SyncAgentCache, got {type(cache).__name__}")


def _open_client(url: str | None, client_factory: Callable[[], Any] | None, cluster: bool) -> Any:
    if client_factory is not None:
        return client_factory()
    assert url is not None
    if cluster:
        from valkey.asyncio.cluster import ValkeyCluster

        return ValkeyCluster.from_url(url)
    from valkey.asyncio import Valkey

    return Valkey.from_url(url)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _shut_down(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, cache: AgentCache | None, client: Any
) -> None:
    """Close the cache and the client on their loop, then stop it. Also the finalizer: no reference to self."""
    if loop.is_closed():
        return

    async def close() -> None:
        try:
            if cache is not None:
                await cache.close()
        finally:
            if client is not None:
                await client.aclose()

    try:
        if loop.is_running() and threading.current_thread() is not thread:
            asyncio.run_coroutine_threadsafe(close(), loop).result(_CLOSE_TIMEOUT_S)
    except Exception as exc:  # closing must not raise from a finalizer; the loop stops regardless
        log.warning("agent-cache: could not close the sync cache cleanly: %s", exc)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(_CLOSE_TIMEOUT_S)


class SyncAgentCache:
    """:class:`AgentCache` with blocking methods: ``cache.llm``, ``cache.tool``, ``cache.session``.

    ``SyncAgentCache("valkey://localhost:6379", name="bot", tier_defaults=...)`` — the keyword options are
    :class:`AgentCacheOptions` fields. Pass ``cluster=True`` for a Valkey Cluster URL, or
    ``client_factory=`` a callable returning a ``valkey.asyncio`` client (called on the cache's own
    loop). The client is owned by this object and closed by :meth:`close`; counters are flushed there
    too (and at interpreter exit if you forget).
    """

    def __init__(
        self,
        url: str | None = None,
        /,
        *,
        client_factory: Callable[[], Any] | None = None,
        cluster: bool = False,
        **options: Any,
    ) -> None:
        if (url is None) == (client_factory is None):
            raise AgentCacheUsageError("pass either a Valkey URL or client_factory=, not both or neither")
        if "client" in options:
            raise AgentCacheUsageError(
                "SyncAgentCache builds its own client on its event loop: pass a URL or client_factory=, not client="
            )
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=_run_loop, args=(self._loop,), name="agent-cache sync loop", daemon=True)
        self._thread.start()
        holder: dict[str, Any] = {}

        async def open_cache() -> AgentCache:
            holder["client"] = _open_client(url, client_factory, cluster)
            return AgentCache(AgentCacheOptions(client=holder["client"], **options))

        try:
            self._cache = asyncio.run_coroutine_threadsafe(open_cache(), self._loop).result()
        except BaseException:
            self._closed = True
            _shut_down(self._loop, self._thread, None, holder.get("client"))
            raise
        self._finalizer = weakref.finalize(self, _shut_down, self._loop, self._thread, self._cache, holder["client"])
        self.llm = SyncLlmCache(self)
        self.tool = SyncToolCache(self)
        self.session = SyncSessionStore(self)

    # ── running coroutines on the private loop ───────────────────────────────

    def _in_own_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def _submit(self, call: Callable[[AgentCache], Awaitable[T]]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise AgentCacheUsageError("this SyncAgentCache is closed")

        async def invoke() -> T:
            return await call(self._cache)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop)

    def run(self, call: Callable[[AgentCache], Awaitable[T]]) -> T:
        """Block until ``call(agent_cache)`` has run on the cache's loop; its exception is re-raised here."""
        if self._in_own_loop():
            raise AgentCacheUsageError(
                "a blocking SyncAgentCache method was called from the cache's own event loop (it would wait "
                "for itself); use `await sync_cache.arun(...)` there"
            )
        future = self._submit(call)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def arun(self, call: Callable[[AgentCache], Awaitable[T]]) -> T:
        """Await ``call(agent_cache)`` from any event loop without blocking it."""
        if self._in_own_loop():
            return await call(self._cache)
        return await asyncio.wrap_future(self._submit(call))

    # ── the AgentCache API ───────────────────────────────────────────────────

    @property
    def name(self) -> str:
        return self._cache.name

    @property
    def keys(self) -> KeyLayout:
        return self._cache.keys

    def tenant(self, tenant: str) -> AbstractContextManager[None]:
        """Scope the calls this thread makes in the block to ``tenant`` (as :meth:`AgentCache.tenant`).

        ``with cache.tenant("acme"): cache.llm.check(params)`` — the scope travels with each call to the
        cache's loop; other threads keep their own.
        """
        return self._cache.tenant(tenant)

    def control(self, **flags: bool) -> ControlScope:
        """Apply a cache control to the calls this thread makes in the block (as :meth:`AgentCache.control`):
        ``with cache.control(refresh=True): cache.llm.get_or_compute(params, ask)``."""
        return self._cache.control(**flags)

    def ensure_discovery_ready(self) -> None:
        """Block until this instance has registered with discovery (see :meth:`AgentCache.ensure_discovery_ready`)."""
        self.run(lambda cache: cache.ensure_discovery_ready())

    @property
    def async_cache(self) -> AgentCache:
        """The wrapped cache; its coroutines must run on this object's loop (use :meth:`run`/:meth:`arun`)."""
        return self._cache

    def stats(self) -> AgentCacheStats:
        return self.run(lambda cache: cache.stats())

    def tool_effectiveness(self) -> list[ToolEffectivenessEntry]:
        return self.run(lambda cache: cache.tool_effectiveness())

    def flush(self) -> int:
        return self.run(lambda cache: cache.flush())

    def close(self) -> None:
        """Flush counters, close the cache and its client, and stop the private loop. Idempotent."""
        if self._closed:
            return
        if self._in_own_loop():
            raise AgentCacheUsageError("SyncAgentCache.close() cannot run on the cache's own event loop")
        self._closed = True
        self._finalizer()

    shutdown = close

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _on_loop(compute: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """``compute`` as the async callable the tiers expect: a coroutine function runs on the cache's loop; a
    plain function runs on a worker thread of it (the loop keeps serving other threads meanwhile), in a
    copy of the calling thread's context."""
    if inspect.iscoroutinefunction(compute):
        return compute

    async def run_elsewhere() -> Any:
        context = contextvars.copy_context()  # the submitting thread's, carried over by run_coroutine_threadsafe
        result = await asyncio.get_running_loop().run_in_executor(None, context.run, compute)
        if inspect.isawaitable(result):  # a lambda returning a coroutine
            result = await result
        return result

    return run_elsewhere


class SyncLlmCache:
    def __init__(self, owner: SyncAgentCache) -> None:
        self._owner = owner

    def check(self, params: Mapping[str, Any], control: CacheControl | None = None) -> LlmCacheResult:
        return self._owner.run(lambda cache: cache.llm.check(params, control))

    def store(
        self,
        params: Mapping[str, Any],
        response: str,
        options: LlmStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> str:
        return self._owner.run(lambda cache: cache.llm.store(params, response, options, control))

    def store_multipart(
        self,
        params: Mapping[str, Any],
        blocks: Sequence[ContentBlock],
        options: LlmStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> str:
        return self._owner.run(lambda cache: cache.llm.store_multipart(params, blocks, options, control))

    def invalidate_by_model(self, model: str) -> int:
        return self._owner.run(lambda cache: cache.llm.invalidate_by_model(model))

    def set_model_policy(self, pattern: str, policy: ModelPolicy) -> None:
        """See :meth:`LlmCache.set_model_policy`: a policy for the models the glob ``pattern`` matches."""
        self._owner.run(lambda cache: cache.llm.set_model_policy(pattern, policy))

    def get_model_policy(self, model: str) -> ModelPolicy | None:
        return self._owner.async_cache.llm.get_model_policy(model)

    def clear(self) -> int:
        return self._owner.run(lambda cache: cache.llm.clear())

    def get_or_compute(
        self,
        params: Mapping[str, Any],
        compute: Callable[[], str | Computed] | Callable[[], Awaitable[str | Computed]],
        options: LlmStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> LlmCacheResult:
        """A hit, or ``compute()`` stored — called once however many callers miss at once (any thread or
        process). ``compute`` is a plain function (run on a worker thread) or an async one."""
        produce = _on_loop(compute)
        return self._owner.run(lambda cache: cache.llm.get_or_compute(params, produce, options, control))


class SyncToolCache:
    def __init__(self, owner: SyncAgentCache) -> None:
        self._owner = owner

    def check(self, tool_name: str, args: Any, control: CacheControl | None = None) -> ToolCacheResult:
        return self._owner.run(lambda cache: cache.tool.check(tool_name, args, control))

    def store(
        self,
        tool_name: str,
        args: Any,
        response: str,
        options: ToolStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> str:
        return self._owner.run(lambda cache: cache.tool.store(tool_name, args, response, options, control))

    def set_policy(self, tool_name: str, policy: ToolPolicy) -> None:
        self._owner.run(lambda cache: cache.tool.set_policy(tool_name, policy))

    def get_policy(self, tool_name: str) -> ToolPolicy | None:
        return self._owner.async_cache.tool.get_policy(tool_name)

    def refresh_policies(self) -> None:
        self._owner.run(lambda cache: cache.tool.refresh_policies())

    load_policies = refresh_policies  # the reference's name

    def reset_policies(self) -> None:
        async def reset(cache: AgentCache) -> None:  # on the loop: upkeep reads the policies there
            cache.tool.reset_policies()

        self._owner.run(reset)

    @property
    def policies_loaded(self) -> bool:
        return self._owner.async_cache.tool.policies_loaded

    def invalidate(self, tool_name: str, args: Any) -> bool:
        return self._owner.run(lambda cache: cache.tool.invalidate(tool_name, args))

    def invalidate_by_tool(self, tool_name: str) -> int:
        return self._owner.run(lambda cache: cache.tool.invalidate_by_tool(tool_name))

    def get_or_compute(
        self,
        tool_name: str,
        args: Any,
        compute: Callable[[], str] | Callable[[], Awaitable[str]],
        options: ToolStoreOptions | None = None,
        control: CacheControl | None = None,
    ) -> ToolCacheResult:
        """A hit, or ``compute()`` stored — called once however many callers miss at once. ``compute`` is a
        plain function (run on a worker thread) or an async one."""
        produce = _on_loop(compute)
        return self._owner.run(lambda cache: cache.tool.get_or_compute(tool_name, args, produce, options, control))

    def cached(
        self, name: str | None = None, *, ttl: int | None = None, cost: float | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a plain tool function: its bound arguments are the key, its JSON result the entry.

        ``@cache.tool.cached("get_weather", ttl=600, cost=0.001)`` — concurrent misses call it once. The
        function runs on a worker thread of the cache's loop; the decorated one blocks like the original.
        """

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(function):
                raise AgentCacheUsageError(
                    f"SyncAgentCache's @cached takes a plain function; {function.__qualname__} is async "
                    "(decorate it with an AgentCache's cache.tool.cached instead)"
                )

            @functools.wraps(function)
            async def on_worker_thread(*args: P.args, **kwargs: P.kwargs) -> R:
                call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
                return await asyncio.get_running_loop().run_in_executor(None, call)

            cached_async = self._owner.async_cache.tool.cached(name or function.__name__, ttl=ttl, cost=cost)(
                on_worker_thread
            )

            @functools.wraps(function)
            def blocking(*args: P.args, **kwargs: P.kwargs) -> R:
                return self._owner.run(lambda _: cached_async(*args, **kwargs))

            return blocking

        return decorate


class SyncSessionStore:
    def __init__(self, owner: SyncAgentCache) -> None:
        self._owner = owner

    def get(self, thread_id: str, field: str) -> str | None:
        return self._owner.run(lambda cache: cache.session.get(thread_id, field))

    def set(self, thread_id: str, field: str, value: str, ttl: int | None = None) -> None:
        self._owner.run(lambda cache: cache.session.set(thread_id, field, value, ttl))

    def get_all(self, thread_id: str) -> dict[str, str]:
        return self._owner.run(lambda cache: cache.session.get_all(thread_id))

    def delete(self, thread_id: str, field: str) -> bool:
        return self._owner.run(lambda cache: cache.session.delete(thread_id, field))

    def destroy_thread(self, thread_id: str) -> int:
        return self._owner.run(lambda cache: cache.session.destroy_thread(thread_id))

    def touch(self, thread_id: str, ttl: int | None = None) -> int:
        return self._owner.run(lambda cache: cache.session.touch(thread_id, ttl))

    def scan_fields_by_prefix(self, thread_id: str, field_prefix: str) -> dict[str, str]:
        return self._owner.run(lambda cache: cache.session.scan_fields_by_prefix(thread_id, field_prefix))

    def reset_tracker(self) -> None:
        async def reset(cache: AgentCache) -> None:  # on the loop, like every other use of the tracker
            cache.session.reset_tracker()

        self._owner.run(reset)
