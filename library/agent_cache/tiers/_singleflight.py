"""Stampede protection: N concurrent misses for one key compute once — in one process or across many.

In-process callers for the same key share one future. Across processes and pods, the first caller
takes a lease lock in Valkey (``SET key:lock token NX PX lease``) and computes; the others poll the cache
until the value appears. When the holder dies or fails, its lease lapses (or it releases the lock), and
a waiter takes over; a waiter that waited a whole lease computes itself. A cancelled caller cancels
only itself: in-process followers of a cancelled leader start over, and its lock is released at once.
A Valkey outage degrades to plain computing: stampede protection never blocks an agent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .._cancellation import cancel_requested, current_cancelling
from .._errors import BackendError
from .._scripts import RELEASE_LOCK
from ._context import TierContext

T = TypeVar("T")

_POLL_START_S = 0.02
_POLL_MAX_S = 0.25


@dataclass
class DeferredOutcome:
    """What a flight's lookup found, for the caller to count once per logical request (the polls of a
    wait count nothing): the hit entry's price and the label its saving is counted under."""

    label: str
    cost: Any = None


class SingleFlight(Generic[T]):
    def __init__(self, ctx: TierContext, tier: str) -> None:
        self._ctx = ctx
        self._tier = tier
        self._inflight: dict[str, asyncio.Future[tuple[T, bool]]] = {}

    async def run(
        self,
        key: str,
        lookup: Callable[[], Awaitable[T | None]],
        compute_and_store: Callable[[], Awaitable[T]],
    ) -> tuple[T, bool]:
        """Return ``(value, from_cache)``; ``compute_and_store`` runs at most once per key at a time.

        A caller that is cancelled takes no one with it: the callers that joined its flight start over (one
        of them leads the next)."""
        task, cancelling = current_cancelling()  # what counts is a cancellation of this call, not an old one
        while True:
            shared = self._inflight.get(key)
            if shared is None:
                break
            try:
                value, _ = await asyncio.shield(shared)
            except asyncio.CancelledError:
                if shared.cancelled() and not cancel_requested(task, cancelling):
                    continue  # the leader went away, not us: lead or join the next flight
                raise
            self._ctx.telemetry.coalesced(self._tier, "local")
            return value, True
        future: asyncio.Future[tuple[T, bool]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            outcome = await self._across_processes(key, lookup, compute_and_store)
        except asyncio.CancelledError:
            future.cancel()  # the followers see a cancelled flight, not their own cancellation
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: followers re-raise it, nobody logs "never retrieved"
            raise
        else:
            future.set_result(outcome)
            return outcome
        finally:
            del self._inflight[key]

    async def _across_processes(
        self, key: str, lookup: Callable[[], Awaitable[T | None]], compute_and_store: Callable[[], Awaitable[T]]
    ) -> tuple[T, bool]:
        ctx = self._ctx
        lock, token = f"{key}:lock", uuid.uuid4().hex
        lease_ms = max(1, int(ctx.lock_lease_s * 1000))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.lock_lease_s
        poll = _POLL_START_S
        waited = False
        while True:
            cached = await lookup()
            if cached is not None:
                if waited:
                    ctx.telemetry.coalesced(self._tier, "waited")
                return cached, True
            try:
                acquired = await ctx.backend.command("SET", lock, token, "NX", "PX", lease_ms)
            except BackendError:
                return await compute_and_store(), False  # no lock without Valkey: just compute
            except asyncio.CancelledError:
                # The SET may have taken the lock before the reply was lost: free it (only if it is ours), or
                # every waiter would wait out the whole lease.
                await asyncio.shield(asyncio.ensure_future(self._release(lock, token)))
                raise
            if acquired:
                try:
                    return await compute_and_store(), False
                finally:
                    # Shielded: a leader cancelled again while releasing still frees the waiters at once.
                    release = asyncio.ensure_future(self._release(lock, token))
                    await asyncio.shield(release)
            if loop.time() >= deadline:
                ctx.telemetry.coalesced(self._tier, "fallback")
                return await compute_and_store(), False
            waited = True
            await asyncio.sleep(poll)
            poll = min(poll * 2, _POLL_MAX_S)

    async def _release(self, lock: str, token: str) -> None:
        try:
            await self._ctx.backend.run_script(RELEASE_LOCK, (lock,), (token,))
        except BackendError:
            pass  # the lease expires on its own
