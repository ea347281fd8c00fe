"""Session state tier: one key per (thread, field) with a per-thread index, and sliding TTLs.

Individual keys keep per-field TTLs; the thread's index (a sorted set in the same cluster slot) makes
``get_all``, ``destroy_thread`` and ``touch`` one script call costing O(that thread's fields), where the
reference SCANs the whole keyspace. A read is one round trip that also slides the TTL: usually a plain
``GETEX`` (as cheap as a ``GET``), a script only when this process has not seen the thread's index
extended for the last half TTL (see :class:`CoveredIndexes`).

Session state is not a cache: a failed write raises, it never silently "fails open".
"""

from __future__ import annotations

import time
from collections import OrderedDict

from .._backend import as_text
from .._errors import AgentCacheUsageError
from .._keys import decode_segment, encode_segment
from .._scripts import DELETE_INDEXED, GET_ALL_INDEXED, GET_SLIDING, SET_INDEXED, TOUCH_INDEXED, Script
from ._context import TierContext
from .tool import drop_index

_TRACKED_THREADS = 10_000

# KEYS: thread index. ARGV: key prefix, encoded field prefix. Flat member, value list of the live fields whose
# member starts with the prefix (an encoded prefix of an encoded field is the encoding of a prefix of the field:
# every escape is a whole ``%XX``). Reads only: no TTL slides, nothing is pruned.
SCAN_FIELDS_INDEXED = Script(
    "scan_fields_indexed",
    """
local out = {}
local n = #ARGV[2]
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if n == 0 or string.sub(member, 1, n) == ARGV[2] then
    local value = redis.call('GET', ARGV[1] .. member)
    if value then
      out[#out + 1] = member
      out[#out + 1] = value
    end
  end
end
return out
""",
)


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


class CoveredIndexes:
    """Thread indexes this process has just seen extended, whose fields a read may slide with a plain GETEX.

    A session write or a scripted read leaves the index living at least twice the sliding TTL from then
    (``_scripts``: the index outlives every member), so for half a TTL afterwards sliding a field by the
    TTL cannot outrun its index. If another process deletes the index meanwhile (``destroy_thread``), the
    fields go with it, and whichever write recreates the index gives it that lifetime again. Only indexes
    with an expiry are recorded: one kept without (a field has no TTL) is left to the script, which gives
    it an expiry once every field has one. A different TTL (a live config changed it) forgets everything.
    """

    def __init__(self, limit: int = _TRACKED_THREADS) -> None:
        self._limit = limit
        self._until: dict[str, float] = {}
        self._ttl: int | None = None

    def covers(self, index: str, ttl: int) -> bool:
        if ttl != self._ttl:
            return False
        until = self._until.get(index)
        return until is not None and time.monotonic() < until

    def add(self, index: str, ttl: int, extended_at: float) -> None:
        """``index`` was extended for ``ttl`` by a command sent at ``extended_at`` (``time.monotonic()``)."""
        if ttl != self._ttl or len(self._until) >= self._limit:
            self._until.clear()
            self._ttl = ttl
        self._until[index] = extended_at + ttl / 2

    def forget(self, index: str | None = None) -> None:
        if index is None:
            self._until.clear()
        else:
            self._until.pop(index, None)


def index_lifetime_ms(ttl: int, sliding_ttl: int | None) -> int:
    """How long a write keeps the thread's index alive: past the field's TTL, and twice any TTL a read
    may slide a field to (what :class:`CoveredIndexes` relies on)."""
    return ttl * 1000 if sliding_ttl is None else 2 * max(ttl, sliding_ttl) * 1000


class SessionStore:
    def __init__(self, context: TierContext) -> None:
        self._ctx = context
        self._threads = ActiveThreads()
        self._covered = CoveredIndexes()

    @property
    def current_tenant(self) -> str | None:
        """The tenant of the calling task (``with cache.tenant(...)``; None outside one): thread keys carry it."""
        return self._ctx.tenant_name

    @property
    def ttl(self) -> int | None:
        """The session tier's TTL in seconds right now (live config included); None: fields never expire."""
        return self._ctx.ttl.tier_ttl("session")

    def _thread_keys(self, thread_id: str) -> tuple[str, str]:
        return self._ctx.keys.session_keys(thread_id, self._ctx.tenant_name)

    def _locate(self, thread_id: str, field: str) -> tuple[str, str, str]:
        prefix, index = self._thread_keys(thread_id)
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
                elif self._covered.covers(index, ttl):
                    raw = await ctx.backend.getex(key, ttl)
                else:
                    sent_at = time.monotonic()
                    reply = await ctx.backend.run_script(
                        GET_SLIDING, (key, index), (member, ttl, index_lifetime_ms(ttl, ttl))
                    )
                    raw = None
                    if reply is not None:
                        raw, has_expiry = reply
                        if int(has_expiry):
                            self._covered.add(index, ttl, sent_at)
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
                sliding = ctx.ttl.tier_ttl("session")
                lifetime = "" if effective is None else index_lifetime_ms(effective, sliding)
                sent_at = time.monotonic()
                has_expiry = await ctx.backend.run_script(
                    SET_INDEXED, (key, index), (member, value, effective or "", lifetime)
                )
                if sliding is not None and int(has_expiry):
                    self._covered.add(index, sliding, sent_at)
            ctx.stats.add("session:writes")
            ctx.telemetry.stored_bytes("session", size)
            ctx.telemetry.active_sessions(self._threads.add(thread_id))

    async def get_all(self, thread_id: str) -> dict[str, str]:
        """Every live field of a thread (sliding their TTLs, like ``get``)."""
        ctx = self._ctx
        with ctx.measured("session", "get_all"):
            with ctx.telemetry.span("agent_cache.session.get_all", {"cache.thread_id": thread_id}) as span:
                prefix, index = self._thread_keys(thread_id)
                ttl = ctx.ttl.tier_ttl("session")
                lifetime = "" if ttl is None else index_lifetime_ms(ttl, ttl)
                flat = await ctx.backend.run_script(GET_ALL_INDEXED, (index,), (prefix, ttl or "", lifetime))
                fields = {decode_segment(as_text(flat[i])): as_text(flat[i + 1]) for i in range(0, len(flat), 2)}
                ctx.stats.add("session:reads")
                span.set_attribute("cache.field_count", len(fields))
                return fields

    async def scan_fields_by_prefix(self, thread_id: str, field_prefix: str) -> dict[str, str]:
        """The thread's live fields whose name starts with ``field_prefix`` (``""``: all), read without
        sliding their TTLs. One script over the thread's index: O(that thread's fields), no keyspace SCAN."""
        ctx = self._ctx
        if not isinstance(field_prefix, str):
            raise AgentCacheUsageError(f"field_prefix must be a string, got {type(field_prefix).__name__}")
        with ctx.measured("session", "scan_fields_by_prefix"):
            attributes = {"cache.thread_id": thread_id, "cache.field_prefix": field_prefix}
            with ctx.telemetry.span("agent_cache.session.scan_fields_by_prefix", attributes) as span:
                prefix, index = self._thread_keys(thread_id)
                encoded = encode_segment(field_prefix, "field_prefix") if field_prefix else ""
                flat = await ctx.backend.run_script(SCAN_FIELDS_INDEXED, (index,), (prefix, encoded))
                fields = {decode_segment(as_text(flat[i])): as_text(flat[i + 1]) for i in range(0, len(flat), 2)}
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
                tenant = ctx.tenant_name
                prefix, index = ctx.keys.session_keys(thread_id, tenant)
                checkpoints = (
                    ctx.keys.checkpoint_index(thread_id, tenant),
                    ctx.keys.checkpoint_prefix(thread_id, tenant),
                )
                # The thread's LangGraph checkpoints (adapters.langgraph) sit under their own index, in the
                # same slot: both go in the same script calls.
                deleted = await drop_index(ctx, (index, prefix), checkpoints)
                self._covered.forget(index)
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
                    prefix, index = self._thread_keys(thread_id)
                    lifetime = index_lifetime_ms(effective, ctx.ttl.tier_ttl("session"))
                    touched = int(await ctx.backend.run_script(TOUCH_INDEXED, (index,), (prefix, effective, lifetime)))
                span.set_attribute("cache.touched_count_approx", touched)
                return touched

    def reset_tracker(self) -> None:
        """Forget the threads this process tracked (``AgentCache.flush()`` calls it): the ``active_sessions``
        gauge drops what this process added, and the next read of every thread takes the sliding script."""
        self._ctx.telemetry.active_sessions(self._threads.clear())
        self._covered.forget()

    forget_threads = reset_tracker
