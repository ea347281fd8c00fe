"""LangGraph checkpointer on vanilla Valkey: ``graph.compile(checkpointer=BetterDBSaver(cache))``.

No modules (no RedisJSON, no RediSearch): a thread's checkpoints, channel values and pending writes sit
in one hash plus one lexically ordered sorted set that share the thread's cluster hash tag (the layout
is in ``_checkpoint_scripts``, the records' encoding in ``_checkpoint_records``). Every operation on a
thread is one Lua script — one round trip, atomic — and costs O(that thread), never O(keyspace):
``get_tuple`` reads the namespace's newest checkpoint from the ordered set; ``list`` pages through it
newest first.

Values go through the saver's ``serde`` (LangGraph's ``JsonPlusSerializer`` by default), so LangChain
messages, Pydantic models, dataclasses and the rest survive — the reference saver JSON-dumped
checkpoints and silently dropped what JSON could not hold, losing the conversation on turn 2. The bytes
are stored base64-encoded, so any client works, with or without ``decode_responses``.

The thread lives as long as the session tier says (``ttl="session"``, the default), an explicit number
of seconds, or forever (``ttl=None``); the TTL belongs to the whole thread and every write renews it.
``cache.session.destroy_thread(thread)`` deletes the thread's checkpoints too.

Inside ``with cache.tenant("acme")`` the checkpoints are that tenant's (the key layout puts the tenant in the
thread's hash tag, as for session fields): tenants never see each other's threads, and ``destroy_thread`` or
``agent-cache invalidate --thread ID --tenant acme`` deletes them. The saver reaches the cache only through its
public seams: ``cache.keys`` (the layout), ``cache.backend``, ``cache.session`` (TTL, tenant) and ``cache.telemetry``.

Sync methods (``graph.invoke``) need a :class:`~agent_cache.SyncAgentCache`; with an
:class:`~agent_cache.AgentCache` only the async ones (``graph.ainvoke``) work.
"""

from __future__ import annotations

import builtins
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from agent_cache._backend import as_text
from agent_cache._errors import AgentCacheUsageError, ConfigurationError
from agent_cache._keys import decode_segment
from agent_cache._ttl import validate_ttl
from agent_cache.sync import cache_runner
from agent_cache.tiers._context import error_kind

from . import _checkpoint_scripts as scripts

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_metadata,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError('BetterDBSaver needs LangGraph: pip install "agent-cache[langgraph]"') from exc

from ._checkpoint_records import (
    checkpoint_config,
    checkpoint_tuple,
    configurable,
    list_bounds,
    matches,
    ns_segment,
    put_args,
    segment,
    write_args,
)

if TYPE_CHECKING:
    from agent_cache.cache import AgentCache
    from agent_cache.sync import SyncAgentCache

ThreadTtl = int | Literal["session"] | None

_PAGE = 50
_TRACKED_RUNS = 10_000


class BetterDBSaver(BaseCheckpointSaver[str]):
    """LangGraph ``BaseCheckpointSaver`` on agent-cache.

    ``cache`` is an :class:`~agent_cache.AgentCache` (async graph calls) or a
    :class:`~agent_cache.SyncAgentCache` (sync and async). ``ttl``: ``"session"`` follows the session
    tier's TTL (live config included), an int is seconds, ``None`` keeps threads until deleted.
    """

    def __init__(
        self,
        cache: AgentCache | SyncAgentCache,
        *,
        ttl: ThreadTtl = "session",
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._runner = cache_runner(cache)
        self._ttl: ThreadTtl = ttl if ttl == "session" else validate_ttl(ttl, "ttl")
        # (tenant, run, thread) already in the run index, with when (monotonic): saves a round trip per put.
        self._registered_runs: OrderedDict[tuple[str | None, str, str], float] = OrderedDict()

    # ── plumbing ─────────────────────────────────────────────────────────────

    def _thread_ttl(self, cache: AgentCache) -> int | None:
        if self._ttl == "session":
            return cache.session.ttl
        return self._ttl

    @staticmethod
    def _keys(cache: AgentCache, thread_id: str, *, with_index: bool = True) -> tuple[str, ...]:
        """The thread's checkpoint keys, of the calling task's tenant (``cache.tenant(...)``)."""
        tenant = cache.session.current_tenant
        prefix = cache.keys.checkpoint_prefix(thread_id, tenant)
        keys = (prefix + "data", prefix + "order")
        return (*keys, cache.keys.checkpoint_index(thread_id, tenant)) if with_index else keys

    @contextmanager
    def _measured(self, cache: AgentCache, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            cache.telemetry.error("session", operation, error_kind(exc))
            raise
        finally:
            cache.telemetry.duration("session", operation, time.perf_counter() - start)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions with a random fraction, like LangGraph's own savers: forks never reuse a value's key."""
        number = 0 if current is None else current if isinstance(current, int) else int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # ── get_tuple ────────────────────────────────────────────────────────────

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._runner.run(lambda cache: self._get_tuple(cache, config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._runner.arun(lambda cache: self._get_tuple(cache, config))

    async def _get_tuple(self, cache: AgentCache, config: RunnableConfig) -> CheckpointTuple | None:
        conf = configurable(config, "get_tuple()")
        thread_id = str(conf["thread_id"])
        checkpoint_id = conf.get("checkpoint_id")
        with self._measured(cache, "checkpoint_get"):
            record = await cache.backend.run_script(
                scripts.GET,
                self._keys(cache, thread_id, with_index=False),
                (
                    ns_segment(conf.get("checkpoint_ns", "")),
                    segment(checkpoint_id, "checkpoint_id") if checkpoint_id else "",
                ),
            )
        return None if not record else checkpoint_tuple(self.serde, thread_id, record)

    # ── list ─────────────────────────────────────────────────────────────────

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect(cache: AgentCache) -> builtins.list[CheckpointTuple]:
            fetch = self._page_fetcher(cache)
            return [item async for item in self._iterate(fetch, config, filter, before, limit)]

        return iter(self._runner.run(collect))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async def fetch(thread_id: str, high: str, low: str, count: int) -> Any:
            return await self._runner.arun(lambda cache: self._page_fetcher(cache)(thread_id, high, low, count))

        async for item in self._iterate(fetch, config, filter, before, limit):
            yield item

    def _page_fetcher(self, cache: AgentCache) -> Callable[[str, str, str, int], Awaitable[Any]]:
        async def fetch(thread_id: str, high: str, low: str, count: int) -> Any:
            with self._measured(cache, "checkpoint_list"):
                return await cache.backend.run_script(
                    scripts.LIST, self._keys(cache, thread_id, with_index=False), (high, low, count)
                )

        return fetch

    async def _iterate(
        self,
        fetch: Callable[[str, str, str, int], Awaitable[Any]],
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Newest first within a namespace; without ``checkpoint_ns`` in the config, every namespace."""
        if config is None:
            raise AgentCacheUsageError(
                "list() needs a config with a thread_id: listing every thread would scan the whole keyspace"
            )
        conf = configurable(config, "list()")
        thread_id = str(conf["thread_id"])
        if limit is not None and limit <= 0:
            return
        only_id: str | None = conf.get("checkpoint_id")
        before_id: str | None = ((before or {}).get("configurable") or {}).get("checkpoint_id")
        low, high = list_bounds(conf.get("checkpoint_ns"), only_id, before_id)
        page = min(limit, _PAGE) if limit is not None and not filter else _PAGE
        remaining = limit
        while True:
            seen, last, *records = await fetch(thread_id, high, low, page)
            for record in records:
                item = checkpoint_tuple(self.serde, thread_id, record)
                checkpoint_id = item.checkpoint["id"]
                if only_id and checkpoint_id != only_id:
                    continue
                if before_id and checkpoint_id >= before_id:
                    continue
                if not matches(item.metadata, filter):
                    continue
                yield item
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return
            if int(seen) < page:
                return
            high = "(" + as_text(last)

    # ── put ──────────────────────────────────────────────────────────────────

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._runner.run(lambda cache: self._put(cache, config, checkpoint, metadata, new_versions))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._runner.arun(lambda cache: self._put(cache, config, checkpoint, metadata, new_versions))

    async def _put(
        self,
        cache: AgentCache,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = configurable(config, "put()")
        thread_id = str(conf["thread_id"])
        stored_metadata = get_checkpoint_metadata(config, metadata)
        run_id = stored_metadata.get("run_id")
        args = put_args(self.serde, conf, checkpoint, stored_metadata, new_versions, self._thread_ttl(cache))
        with self._measured(cache, "checkpoint_put"):
            first_of_run = await cache.backend.run_script(scripts.PUT, self._keys(cache, thread_id), args)
            if run_id:
                await self._register_run(cache, str(run_id), thread_id, listed=not int(first_of_run))
        return checkpoint_config(thread_id, conf.get("checkpoint_ns", ""), checkpoint["id"])

    async def _register_run(self, cache: AgentCache, run_id: str, thread_id: str, *, listed: bool = False) -> None:
        """Add the thread to the run's index, after its checkpoint is written.

        Deleters unlist a thread before they delete its checkpoints of the run, so a checkpoint written while
        ``delete_for_runs`` or ``delete_thread`` runs is either deleted or listed again here — never left out of
        its run's index. ``listed``: the thread already held a checkpoint of the run (the put script says so),
        whose listing covers this one too; then only a listing this saver has not renewed for half a TTL is.
        """
        ttl = self._thread_ttl(cache)
        now = time.monotonic()
        tenant = cache.session.current_tenant
        pair = (tenant, run_id, thread_id)
        seen = self._registered_runs.get(pair)
        if listed and seen is not None and (ttl is None or now - seen < ttl / 2):
            return
        index = cache.keys.checkpoint_run_index(run_id, tenant)
        expiry: tuple[str, tuple[str | int, ...]] = ("PEXPIRE", (index, ttl * 1000)) if ttl else ("PERSIST", (index,))
        await cache.backend.pipeline([("SADD", (index, thread_id)), expiry])
        self._registered_runs[pair] = now
        self._registered_runs.move_to_end(pair)
        while len(self._registered_runs) > _TRACKED_RUNS:
            self._registered_runs.popitem(last=False)

    # ── put_writes ───────────────────────────────────────────────────────────

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._runner.run(lambda cache: self._put_writes(cache, config, writes, task_id, task_path))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self._runner.arun(lambda cache: self._put_writes(cache, config, writes, task_id, task_path))

    async def _put_writes(
        self, cache: AgentCache, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> None:
        """All writes of one call land together (one script); a repeated (task, index) keeps the first value,
        except the special channels (errors, interrupts...), whose latest value wins — as in LangGraph's savers."""
        conf = configurable(config, "put_writes()")
        if not conf.get("checkpoint_id"):
            raise AgentCacheUsageError("put_writes() needs config['configurable']['checkpoint_id']")
        thread_id = str(conf["thread_id"])
        args = write_args(self.serde, conf, writes, task_id, task_path, self._thread_ttl(cache))
        if len(args) == 1:
            return
        with self._measured(cache, "checkpoint_put_writes"):
            await cache.backend.run_script(scripts.PUT_WRITES, self._keys(cache, thread_id), args)

    # ── delete_thread / delete_for_runs ──────────────────────────────────────

    def delete_thread(self, thread_id: str) -> None:
        self._runner.run(lambda cache: self._delete_thread(cache, thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._runner.arun(lambda cache: self._delete_thread(cache, thread_id))

    async def _delete_thread(self, cache: AgentCache, thread_id: str | Any) -> None:
        thread_id = str(thread_id)
        backend, keys = cache.backend, self._keys(cache, thread_id)
        with self._measured(cache, "checkpoint_delete_thread"):
            # Unlisted from its runs' indexes first, then deleted (puts write, then list): see _register_run.
            run_members = await backend.command("ZRANGEBYLEX", keys[1], "[r:", "(r;")
            runs = {decode_segment(as_text(member).split(":")[1]) for member in run_members or ()}
            tenant = cache.session.current_tenant
            if runs:
                await backend.pipeline(
                    ("SREM", (cache.keys.checkpoint_run_index(run, tenant), thread_id)) for run in sorted(runs)
                )
            await backend.run_script(scripts.DELETE_THREAD, keys, ())
            for run in runs:
                self._registered_runs.pop((tenant, run, thread_id), None)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._runner.run(lambda cache: self._delete_for_runs(cache, run_ids))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._runner.arun(lambda cache: self._delete_for_runs(cache, run_ids))

    async def _delete_for_runs(self, cache: AgentCache, run_ids: Sequence[str]) -> None:
        """Costs O(threads of those runs): each run's index names its threads.

        Each index loses exactly the threads read from it, before their checkpoints go (puts write, then list: see
        ``_register_run``): a thread a put adds meanwhile stays listed, and so does one whose checkpoint of the run
        lands after the delete.
        """
        runs = sorted({str(run) for run in run_ids})
        if not runs:
            return
        backend, tenant = cache.backend, cache.session.current_tenant
        with self._measured(cache, "checkpoint_delete_for_runs"):
            indexes = [cache.keys.checkpoint_run_index(run, tenant) for run in runs]
            members = await backend.pipeline(("SMEMBERS", (index,)) for index in indexes)
            read = [sorted(as_text(thread) for thread in threads or ()) for threads in members]
            unlist = [("SREM", (index, *threads)) for index, threads in zip(indexes, read, strict=True) if threads]
            if unlist:
                await backend.pipeline(unlist)
            by_thread: dict[str, builtins.list[str]] = {}
            for run, threads in zip(runs, read, strict=True):
                for thread in threads:
                    by_thread.setdefault(thread, []).append(segment(run, "run id"))
            for thread_id, tokens in by_thread.items():
                await backend.run_script(scripts.DELETE_RUNS, self._keys(cache, thread_id), tokens)
            for run in runs:
                for thread_id in by_thread:
                    self._registered_runs.pop((tenant, run, thread_id), None)

    # ── copy_thread / prune ──────────────────────────────────────────────────

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._runner.run(lambda cache: self._copy_thread(cache, source_thread_id, target_thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._runner.arun(lambda cache: self._copy_thread(cache, source_thread_id, target_thread_id))

    async def _copy_thread(self, cache: AgentCache, source: str, target: str) -> None:
        """Every checkpoint, value and write of ``source`` into ``target`` (two slots: two scripts)."""
        source, target = str(source), str(target)
        backend = cache.backend
        with self._measured(cache, "checkpoint_copy_thread"):
            exported = await backend.run_script(scripts.EXPORT, self._keys(cache, source, with_index=False), ())
            pairs, order = exported
            if isinstance(pairs, dict):  # RESP3 clients answer HGETALL with a map
                pairs = [item for pair in pairs.items() for item in pair]
            if not order:
                return
            args = [self._thread_ttl(cache) or "", len(pairs), *pairs, *order]
            await backend.run_script(scripts.IMPORT, self._keys(cache, target), args)
            runs = {decode_segment(as_text(m).split(":")[1]) for m in order if as_text(m).startswith("r:")}
            for run in sorted(runs):  # listed after the write, as puts do
                await self._register_run(cache, run, target)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._runner.run(lambda cache: self._prune(cache, thread_ids, strategy))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._runner.arun(lambda cache: self._prune(cache, thread_ids, strategy))

    async def _prune(self, cache: AgentCache, thread_ids: Sequence[str], strategy: str) -> None:
        """``keep_latest``: each namespace's newest checkpoint, its writes and the values it reads stay.

        Like LangGraph's own savers this does not walk back to a ``DeltaChannel`` snapshot: prune threads of
        graphs that use delta channels with ``strategy="delete"`` or not at all.
        """
        if strategy not in ("keep_latest", "delete"):
            raise AgentCacheUsageError(f"prune strategy must be 'keep_latest' or 'delete', got {strategy!r}")
        for thread_id in thread_ids:
            if strategy == "delete":
                await self._delete_thread(cache, thread_id)
                continue
            with self._measured(cache, "checkpoint_prune"):
                await cache.backend.run_script(scripts.PRUNE_KEEP_LATEST, self._keys(cache, str(thread_id)), ())


AgentCacheSaver = BetterDBSaver

__all__ = ["AgentCacheSaver", "BetterDBSaver"]
