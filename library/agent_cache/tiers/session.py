"""Session state tier: one key per (thread, field) with a per-thread index, and sliding TTLs.

Individual keys keep per-field TTLs; the thread's index (a sorted set in the same cluster slot) makes
``get_all``, ``destroy_thread`` and ``touch`` one script call costing O(that thread's fields), where the
reference SCANs the whole keyspace. A read is one round trip that also slides the TTL.

Session state is not a cache: a failed write raises, it never silently "fails open".
"""

from __future__ import annotations

from collections import OrderedDict

from .._backend import as_text
from .._errors import AgentCacheUsageError
from .._keys import decode_segment, encode_segment
from .._scripts import DELETE_INDEXED, GET_ALL_INDEXED, GET_SLIDING, SET_INDEXED, TOUCH_INDEXED
from ._context import TierContext
from .tool import drop_index

_TRACKED_THREADS = 10_000


class ActiveThreads:
    """Bounded LRU of threads this process wrote to: drives the approximate ``active_sessions`` gauge."""

    def __init__(self, limit: int = _TRACKED_THREADS) -> None:
        self._limit = limit
        self._seen: OrderedDict[str, None] = OrderedDict()

    def add(self, thread_id: str) -> int:
        if thread_id in self._seen:
            self._seen.move_to_end(thread_id)
            return 0
        self._seen[thread_id] = None
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
            return 0
        return 1

    def remove(self, thread_id: str) -> int:
        return -1 if self._seen.pop(thread_id, 0) is None else 0

    def clear(self) -> int:
        count = len(self._seen)
        self._seen.clear()
        return -count


class SessionStore:
    def __init__(self, context: TierContext) -> None:
        self._ctx = context
        self._threads = ActiveThreads()

    def _locate(self, thread_id: str, field: str) -> tuple[str, str, str]:
        ctx = self._ctx
        prefix, index = ctx.keys.session_keys(ctx.thread(thread_id))
        member = encode_segment(field, "field")
        return prefix + member, member, index

    async def get(self, thread_id: str, field: str) -> str | None:
        ctx = self._ctx
        with ctx.measured("session", "get"):
            key, member, index = self._locate(thread_id, field)
            with ctx.telemetry.span("agent_cache.session.get") as span:
                if span.is_recording():
                    span.set_attributes({"cache.key": key, "cache.thread_id": thread_id, "cache.field": field})
                ttl = ctx.ttl.tier_ttl("session")
                if ttl is None:
                    raw = await ctx.backend.get(key)
                else:
                    raw = await ctx.backend.run_script(GET_SLIDING, (key, index), (member, ttl))
                ctx.stats.add("session:reads")
                span.set_attribute("cache.hit", raw is not None)
                return None if raw is None else as_text(raw)

    async def set(self, thread_id: str, field: str, value: str, ttl: int | None = None) -> None:
        ctx = self._ctx
        if not isinstance(value, str):
            raise AgentCacheUsageError(f"session value must be a string, got {type(value).__name__}")
        with ctx.measured("session", "set"):
            key, member, index = self._locate(thread_id, field)
            effective = ctx.ttl.resolve("session", ttl)
            size = len(value.encode())
            with ctx.telemetry.span("agent_cache.session.set") as span:
                if span.is_recording():
                    span.set_attributes(
                        {
                            "cache.key": key,
                            "cache.thread_id": thread_id,
                            "cache.field": field,
                            "cache.ttl": effective or -1,
                            "cache.bytes": size,
                        }
                    )
                if ctx.max_entry_bytes is not None and size > ctx.max_entry_bytes:
                    # State is not a cache: refuse loudly rather than drop it.
                    raise AgentCacheUsageError(
                        f"session value for field {field!r} is {size} bytes, over max_entry_bytes="
                        f"{ctx.max_entry_bytes}; nothing was written"
                    )
                await ctx.backend.run_script(SET_INDEXED, (key, index), (member, value, effective or ""))
            ctx.stats.add("session:writes")
            ctx.telemetry.stored_bytes("session", size)
            ctx.telemetry.active_sessions(self._threads.add(thread_id))

    async def get_all(self, thread_id: str) -> dict[str, str]:
        """Every live field of a thread (sliding their TTLs, like ``get``)."""
        ctx = self._ctx
        with ctx.measured("session", "get_all"):
            with ctx.telemetry.span("agent_cache.session.get_all", {"cache.thread_id": thread_id}) as span:
                index = ctx.keys.session_index(ctx.thread(thread_id))
                ttl = ctx.ttl.tier_ttl("session")
                flat = await ctx.backend.run_script(
                    GET_ALL_INDEXED, (index,), (ctx.keys.session_prefix(ctx.thread(thread_id)), ttl or "")
                )
                fields = {decode_segment(as_text(flat[i])): as_text(flat[i + 1]) for i in range(0, len(flat), 2)}
                ctx.stats.add("session:reads")
                span.set_attribute("cache.field_count", len(fields))
                return fields

    async def delete(self, thread_id: str, field: str) -> bool:
        ctx = self._ctx
        with ctx.measured("session", "delete"):
            key, member, index = self._locate(thread_id, field)
            attributes = {"cache.key": key, "cache.thread_id": thread_id, "cache.field": field}
            with ctx.telemetry.span("agent_cache.session.delete", attributes) as span:
                deleted = int(await ctx.backend.run_script(DELETE_INDEXED, (key, index), (member,)))
                span.set_attribute("cache.deleted_count", deleted)
                return deleted > 0

    async def destroy_thread(self, thread_id: str) -> int:
        """Delete every field of a thread and its LangGraph checkpoints; returns how many keys existed."""
        ctx = self._ctx
        with ctx.measured("session", "destroy_thread"):
            with ctx.telemetry.span("agent_cache.session.destroy_thread", {"cache.thread_id": thread_id}) as span:
                thread = ctx.thread(thread_id)
                prefix, index = ctx.keys.session_keys(thread)
                # The thread's LangGraph checkpoints (adapters.langgraph) sit under their own index, in the
                # same slot: both go in the same script calls.
                deleted = await drop_index(
                    ctx, (index, prefix), (ctx.keys.checkpoint_index(thread), ctx.keys.checkpoint_prefix(thread))
                )
                ctx.telemetry.active_sessions(self._threads.remove(thread_id))
                span.set_attribute("cache.deleted_count", deleted)
                return deleted

    async def touch(self, thread_id: str, ttl: int | None = None) -> int:
        """Refresh the TTL of every field (to ``ttl`` or the tier's); returns how many were touched."""
        ctx = self._ctx
        with ctx.measured("session", "touch"):
            with ctx.telemetry.span("agent_cache.session.touch", {"cache.thread_id": thread_id}) as span:
                effective = ctx.ttl.resolve("session", ttl)
                touched = 0
                if effective is not None:
                    touched = int(
                        await ctx.backend.run_script(
                            TOUCH_INDEXED,
                            (ctx.keys.session_index(ctx.thread(thread_id)),),
                            (ctx.keys.session_prefix(ctx.thread(thread_id)), effective),
                        )
                    )
                span.set_attribute("cache.touched_count_approx", touched)
                return touched

    def forget_threads(self) -> None:
        """After a flush: the gauge no longer counts this process's threads."""
        self._ctx.telemetry.active_sessions(self._threads.clear())
