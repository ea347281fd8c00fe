"""The near-cache (L1): LLM and tool entries kept in process memory, coherent through server-assisted tracking.

Rules that keep it from ever serving an invalidated answer (the wire side is ``_tracking``):

- An entry enters L1 only from a read on a tracked connection, and only if no invalidation for its key
  (nor a flush or loss of its node's link) arrived while that read was in flight: the key is marked pending
  before the read goes out, and the invalidation link is drained before the reply is kept.
- Every lookup first drains its node's invalidation link (a non-blocking ``recv``): whatever the server
  sent before a writer got its reply and told us so is applied before we answer.
- A node's entries are served only while its link is known to deliver (a heartbeat PING answered within
  the trust window); a lost link, a moved slot, a node that is no longer a primary or a FLUSHALL flush
  that node's entries, and the next read re-arms tracking on new connections.
- An entry is never served past its server-side expiry (PTTL when read, capped by ``max_ttl_s``).
- If the server refuses tracking (ACL, old server, proxy) L1 stays off: no TTL-only fallback.

Reads that cannot use tracking (no link yet, lost, refused) go to the backend as without a near-cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._backend import Backend
from ._cancellation import current_cancelling, raise_if_cancel_requested
from ._errors import AgentCacheError, BackendTimeoutError
from ._tracking import (
    Endpoint,
    InvalidationLink,
    LinkLostError,
    ReadTimeoutError,
    RespError,
    TrackedReader,
    TrackingRefusedError,
)

log = logging.getLogger("agent_cache")

HEARTBEAT_S = 0.25
"""How often each link is pinged (and each primary asked its role)."""
TRUST_S = 1.0
"""How long after a PING whose pong arrived a link is trusted: a silent link stops serving L1 within this."""
DEAD_AFTER_S = 3.0
"""A link whose oldest PING is unanswered for this long is closed and its node's L1 flushed."""
RETRY_S = 1.0
"""After a failed attempt to arm a node, reads go to the backend for at least this long before the next."""
_ENTRY_OVERHEAD = 640  # per entry beyond its JSON and key: decoded dict and str objects, slots (tracemalloc)


class NearCacheListener(Protocol):
    """Where L1 events go (Prometheus, through telemetry)."""

    def near_started(self) -> None: ...
    def near_lookup(self, hit: bool, count: int = 1) -> None: ...
    def near_invalidated(self, count: int) -> None: ...
    def near_evicted(self, count: int) -> None: ...
    def near_refused(self, reason: str) -> None: ...
    def near_size(self, entries: int, size: int) -> None: ...


class SilentListener:
    """A listener that ignores every event (no telemetry wired in); subclass it to watch one kind."""

    def near_started(self) -> None:
        pass

    def near_lookup(self, hit: bool, count: int = 1) -> None:
        pass

    def near_invalidated(self, count: int) -> None:
        pass

    def near_evicted(self, count: int) -> None:
        pass

    def near_refused(self, reason: str) -> None:
        pass

    def near_size(self, entries: int, size: int) -> None:
        pass


@dataclass(eq=False)
class _Node:
    """One Valkey primary: its links, the keys of ours it holds, and an epoch bumped on every flush."""

    endpoint: Endpoint
    link: InvalidationLink | None = None
    reader: TrackedReader | None = None
    epoch: int = 0
    keys: set[str] = field(default_factory=set)
    retry_at: float = 0.0
    arming: asyncio.Task[None] | None = None

    @property
    def armed(self) -> bool:
        return self.link is not None and self.reader is not None


class _Entry:
    __slots__ = ("expires_at", "node", "size", "value")

    def __init__(self, value: Any, expires_at: float, size: int, node: _Node) -> None:
        self.value = value
        self.expires_at = expires_at
        self.size = size
        self.node = node


class NearCache:
    """L1 in front of ``backend`` for whole-entry reads (``lookup`` then, on a miss, ``read``).

    L1 keeps each entry as ``decode(stored bytes)`` -> (value, its size in bytes), decoded once when it enters;
    ``lookup`` returns that shared value: callers must copy what they hand out and may change.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_entries: int,
        max_bytes: int,
        max_ttl_s: float | None,
        listener: NearCacheListener | None = None,
        decode: Callable[[bytes], tuple[Any, int]] = lambda raw: (raw, len(raw)),
    ) -> None:
        self._backend = backend
        self._decode = decode
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_ttl_s = max_ttl_s
        self.listener: NearCacheListener = listener or SilentListener()
        self.listener.near_started()
        self._hits = self._misses = 0  # lookups not yet reported to the listener
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.bytes = 0
        self._inflight: dict[str, list[int]] = {}  # key -> [reads in flight, invalidations seen meanwhile]
        self._nodes: dict[str, _Node] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.refused: str | None = None
        """Why the server refused tracking (then L1 stays off for good), or None."""
        self._closed = False

    # ── the hit path ─────────────────────────────────────────────────────────

    @property
    def entries(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> Any:
        """The decoded entry if L1 may answer for ``key`` now, else None (then call :meth:`read`)."""
        entry = self._entries.get(key)
        if entry is not None:
            link = entry.node.link
            if link is not None:
                link.drain()  # invalidations already delivered to us come first
                now = time.monotonic()
                if self._entries.get(key) is entry and now < link.trusted_until:
                    if now < entry.expires_at:
                        self._entries.move_to_end(key)
                        self._hits += 1  # reported in batches (report_lookups): a counter costs ~1 µs
                        return entry.value
                    self._remove(key)  # expired on the server too
        self._misses += 1
        return None

    def report_lookups(self) -> None:
        """Hand the lookups counted since the last report to the listener (the heartbeat does, 4 times a second)."""
        hits, misses, self._hits, self._misses = self._hits, self._misses, 0, 0
        if hits:
            self.listener.near_lookup(True, hits)
        if misses:
            self.listener.near_lookup(False, misses)

    # ── the miss path ────────────────────────────────────────────────────────

    async def read(self, key: str) -> bytes | None:
        """Read ``key`` from Valkey, on a tracked connection when one is armed (then the entry may enter L1)."""
        node = self._node_for(key)
        if node is None or not node.armed:
            self.report_lookups()  # no heartbeat may be running to report them (tracking refused, not armed yet)
            return await self._backend.get(key)
        link, reader = node.link, node.reader
        assert link is not None and reader is not None
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = [0, 0]
        pending[0] += 1
        invalidations, epoch, sent_at = pending[1], node.epoch, time.monotonic()
        try:
            try:
                raw, pttl = await reader.request(("GET", key), ("PTTL", key))
            except ReadTimeoutError as exc:
                raise BackendTimeoutError(f"Valkey did not answer GET in time ({exc})", command="GET") from exc
            except LinkLostError:
                return await self._backend.get(key)  # the connection went away: the client's own can answer
            if isinstance(raw, RespError) or isinstance(pttl, RespError):
                error = raw if isinstance(raw, RespError) else pttl
                if error.startswith(("MOVED", "ASK", "READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN")):
                    self._lose(node, f"{error.split(' ', 1)[0]} reply: the slot's keys are tracked elsewhere now")
                return await self._backend.get(key)  # the backend reports (or follows) it as usual
            link.drain()  # an invalidation sent while the reply travelled must be seen before keeping it
            if (
                raw is not None
                and pttl != -2
                and pending[1] == invalidations
                and node.epoch == epoch
                and node.link is link
                and not self._closed
            ):
                self._insert(key, raw, node, sent_at, pttl)
            return raw  # type: ignore[no-any-return]
        finally:
            pending[0] -= 1
            if not pending[0] and self._inflight.get(key) is pending:
                del self._inflight[key]

    def _insert(self, key: str, raw: bytes, node: _Node, sent_at: float, pttl: int) -> None:
        ttl_s = pttl / 1000 if pttl >= 0 else None
        if self.max_ttl_s is not None:
            ttl_s = self.max_ttl_s if ttl_s is None else min(ttl_s, self.max_ttl_s)
        try:
            value, size = self._decode(raw)
        except Exception:
            return  # a corrupt entry: the caller's own decoding reports it
        size += len(key) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        self._remove(key)
        self._entries[key] = _Entry(value, float("inf") if ttl_s is None else sent_at + ttl_s, size, node)
        node.keys.add(key)
        self.bytes += size
        self._evict_over_limits()
        self.listener.near_size(len(self._entries), self.bytes)

    def resize(self, max_entries: int, max_bytes: int) -> None:
        """New limits (a live config's); entries beyond them are evicted at once, least recently used first."""
        self.max_entries, self.max_bytes = max_entries, max_bytes
        if self._evict_over_limits():
            self.listener.near_size(len(self._entries), self.bytes)

    def _evict_over_limits(self) -> int:
        """Evict least recently used entries until both limits hold; returns how many went (and counts them)."""
        evicted = 0
        while self._entries and (len(self._entries) > self.max_entries or self.bytes > self.max_bytes):
            oldest, entry = self._entries.popitem(last=False)
            entry.node.keys.discard(oldest)
            self.bytes -= entry.size
            evicted += 1
        if evicted:
            self.listener.near_evicted(evicted)
        return evicted

    # ── invalidation ─────────────────────────────────────────────────────────

    def _remove(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        entry.node.keys.discard(key)
        self.bytes -= entry.size
        self.listener.near_size(len(self._entries), self.bytes)
        return True

    def drop(self, key: str) -> None:
        """Our own write to ``key`` (store, invalidate): forget it now, and any read of it in flight."""
        self._remove(key)
        pending = self._inflight.get(key)
        if pending is not None:
            pending[1] += 1

    async def settle(self, key: str | None = None) -> None:
        """After our own write (of ``key``; None: a bulk delete): one more round trip to the node(s) written.

        The server writes the invalidations a command causes in the same turn as that command's reply, but
        may write the reply first; a later reply on the same node proves they have left. So a caller that
        tells another process "done" only after this never lets that process read the old entry from its L1.
        """
        backend = self._backend
        try:
            if key is not None:
                await backend.command("PTTL", key)
            elif not backend.is_cluster:
                await backend.command("PING")
            else:
                client = backend.client
                async with asyncio.timeout(backend.timeout_s):
                    await client.execute_command("PING", target_nodes=client.get_primaries())
        except (AgentCacheError, TimeoutError):
            pass  # the write itself succeeded; Valkey failing now is the next call's to report
        except Exception as exc:  # a cluster client's own error (PING above bypasses the backend)
            raise_if_cancel_requested(*current_cancelling(), exc)

    def drop_all(self) -> None:
        """Our own bulk delete (invalidate_by_*, clear, flush): forget every entry and read in flight."""
        for node in self._nodes.values():
            self._flush_node(node)
        self._entries.clear()
        self.bytes = 0
        self.listener.near_size(0, 0)
        for pending in self._inflight.values():
            pending[1] += 1

    def _invalidated(self, node: _Node, keys: list[bytes] | None) -> None:
        if keys is None:  # FLUSHALL / FLUSHDB on that node
            self.listener.near_invalidated(self._flush_node(node))
            return
        dropped = 0
        for raw_key in keys:
            key = raw_key.decode(errors="surrogateescape")
            dropped += self._remove(key)
            pending = self._inflight.get(key)
            if pending is not None:
                pending[1] += 1
        if dropped:
            self.listener.near_invalidated(dropped)

    def _flush_node(self, node: _Node) -> int:
        node.epoch += 1  # reads in flight on this node must not fill L1 either
        dropped = 0
        for key in node.keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.bytes -= entry.size
                dropped += 1
        node.keys.clear()
        if dropped:
            self.listener.near_size(len(self._entries), self.bytes)
        return dropped

    # ── links ────────────────────────────────────────────────────────────────

    def _node_for(self, key: str) -> _Node | None:
        """The node whose tracking covers ``key``, arming it in the background when needed (None: L1 off)."""
        if self.refused is not None or self._closed:
            return None
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._adopt(loop)
        client = self._backend.client
        try:
            if self._backend.is_cluster:
                where = client.get_node_from_key(key)
                if where is None:
                    return None
                name, kwargs, connection_class = where.name, where.connection_kwargs, where.connection_class
            else:
                pool = client.connection_pool
                kwargs, connection_class = pool.connection_kwargs, pool.connection_class
                name = "standalone"
            node = self._nodes.get(name)
            if node is None:
                node = self._nodes[name] = _Node(Endpoint.from_connection_kwargs(kwargs, connection_class))
        except TrackingRefusedError as exc:
            self._refuse(str(exc))
            return None
        except Exception:  # a cluster client without its slot table yet: the backend will fetch it
            return None
        if not node.armed and node.arming is None and time.monotonic() >= node.retry_at:
            node.arming = loop.create_task(self._arm(node), name="agent-cache near-cache arm")
        return node

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or use from another event loop: links of the old loop can't be read from this one."""
        self._close_links()
        self._loop = loop
        self._heartbeat = loop.create_task(self._beat(), name="agent-cache near-cache heartbeat")

    async def _arm(self, node: _Node) -> None:
        """Open the node's invalidation link, then a reader tracked into it."""
        link = InvalidationLink(lambda keys: self._invalidated(node, keys), lambda why: self._lost(node, link, why))
        reader: TrackedReader | None = None
        try:
            await link.open(node.endpoint, TRUST_S)
            reader = await TrackedReader.open(
                node.endpoint, link.client_id, lambda lost, why: self._lost(node, lost, why)
            )
        except TrackingRefusedError as exc:
            link.close()
            self._refuse(str(exc))
        except (OSError, LinkLostError, TimeoutError, ValueError) as exc:
            link.close()
            node.retry_at = time.monotonic() + RETRY_S
            log.debug("agent-cache near-cache: could not arm tracking on %s: %s", node.endpoint.name, exc)
        except BaseException:
            link.close()
            if reader is not None:
                reader.close()
            raise
        else:
            if self._closed or self.refused is not None or asyncio.get_running_loop() is not self._loop:
                link.close()
                reader.close()
            else:
                self._flush_node(node)  # nothing read before this link may be trusted
                node.link, node.reader = link, reader
        finally:
            node.arming = None

    def _lost(self, node: _Node, which: object, reason: str) -> None:
        if which is node.link or which is node.reader:
            self._lose(node, reason)

    def _lose(self, node: _Node, reason: str, quiet: bool = False) -> None:
        """Stop trusting ``node``: close its links, flush its entries; the next read re-arms after a pause."""
        link, reader = node.link, node.reader
        node.link = node.reader = None
        if link is not None:
            link.close()
        if reader is not None:
            reader.close()
        dropped = self._flush_node(node)
        if dropped:
            self.listener.near_invalidated(dropped)
        node.retry_at = 0.0  # the next read re-arms; a failure to do so backs off
        if link is not None and not quiet:
            log.info("agent-cache near-cache: %s: %s; its L1 entries were dropped", node.endpoint.name, reason)

    def _refuse(self, reason: str) -> None:
        if self.refused is not None:
            return
        self.refused = reason
        log.warning("agent-cache near-cache is off: the server refused client tracking (%s)", reason)
        self.listener.near_refused(reason)
        self._close_links()

    async def _beat(self) -> None:
        """Ping every link, ask every primary its role, time out stuck reads; ends with the loop or close()."""
        try:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                self.report_lookups()
                now = time.monotonic()
                read_timeout = self._backend.timeout_s
                for node in list(self._nodes.values()):
                    link, reader = node.link, node.reader
                    if link is None or reader is None:
                        continue
                    link.drain()
                    since = link.unanswered_since()
                    if since is not None and now - since > DEAD_AFTER_S:
                        self._lose(node, "its invalidation link stopped answering")
                        continue
                    oldest = reader.oldest_request_since()
                    if read_timeout is not None and oldest is not None and now - oldest > read_timeout:
                        reader.time_out()  # fails its reads with a timeout, then reports the loss
                        continue
                    link.ping(now)
                    role = reader.request(("ROLE",))
                    role.add_done_callback(functools.partial(self._check_role, node, reader))
        finally:
            self._close_links()

    def _check_role(self, node: _Node, reader: TrackedReader, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # the link's loss is handled where it was seen
        reply = done.result()
        if isinstance(reply, list) and reply and reply[0] != b"master" and node.reader is reader:
            self._lose(node, "it is no longer a primary (failover)")

    def _close_links(self) -> None:
        """Close every connection and forget every entry (synchronous: usable from the loop's shutdown)."""
        self.report_lookups()
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None and not heartbeat.done() and heartbeat is not _current_task():
            loop = heartbeat.get_loop()
            if not loop.is_closed():
                heartbeat.cancel()
        for node in self._nodes.values():
            if node.arming is not None and not node.arming.done() and not node.arming.get_loop().is_closed():
                node.arming.cancel()
            self._lose(node, "closed", quiet=True)
        self._nodes.clear()
        self._entries.clear()
        self.bytes = 0

    async def close(self) -> None:
        """End the heartbeat and close every connection; L1 is empty afterwards."""
        self._closed = True
        tasks = [task for task in (self._heartbeat, *(n.arming for n in self._nodes.values())) if task is not None]
        self._close_links()
        loop = asyncio.get_running_loop()
        mine = [task for task in tasks if task.get_loop() is loop and task is not _current_task()]
        if mine:
            await asyncio.wait(mine)


def _current_task() -> asyncio.Task[Any] | None:
    with contextlib.suppress(RuntimeError):
        return asyncio.current_task()
    return None
