"""The reader side of the live config protocol (see ``config``): watch, re-read, apply, report.

A change is applied within about a second of its pub/sub announcement; an interval re-read covers a
missed message or a lost subscription. A malformed config is counted and logged and the last good one
stays — the refresh never dies on bad input. Each instance records the version it applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ._backend import Backend, Subscription, subscribe
from ._cancellation import current_cancelling, raise_if_cancel_requested
from ._errors import AgentCacheError, AgentCacheUsageError, ConfigurationError
from ._loop_lock import LoopLock
from .config import CacheConfig, changed_channel, forget_instance, new_instance_id, parse_applied, record_instance
from .telemetry import Telemetry

log = logging.getLogger("agent_cache")

ApplyConfig = Callable[[CacheConfig | None], Awaitable[None]]

_MAX_BACKOFF_S = 30.0


class LiveConfig:
    def __init__(self, backend: Backend, name: str, telemetry: Telemetry, apply: ApplyConfig) -> None:
        self._backend = backend
        self._name = name
        self._config_key = f"{name}:__config"
        self._telemetry = telemetry
        self._apply = apply
        self.instance_id = new_instance_id()
        self.version: str | None = None
        self._refreshing = LoopLock()
        self._subscription: Subscription | None = None
        self._stopped: asyncio.Event | None = None  # one per watch(): an Event belongs to the loop that waits on it

    async def refresh(self) -> None:
        """Read the config and apply it if its version changed; a malformed one keeps the last good."""
        async with self._refreshing.held():  # pub/sub and the interval must not apply concurrently
            raw = await self._backend.command("HGETALL", self._config_key)
            try:
                applied = parse_applied(raw or {})
            except ConfigurationError as exc:
                self._telemetry.config_refresh_failed()
                log.error(
                    "agent-cache %s: ignoring malformed live config (keeping %s): %s", self._name, self.version, exc
                )
                return
            version = None if applied is None else applied.version
            if version == self.version:
                return
            await self._apply(None if applied is None else applied.config)
            self._telemetry.config_version(self.version, version)
            log.info("agent-cache %s: applied live config %s", self._name, version or "(none: code defaults)")
            self.version = version
        await self.report()

    async def report(self) -> None:
        await record_instance(self._backend, self._name, self.instance_id, self.version)

    async def watch(self, closed: Callable[[], bool]) -> None:
        """Apply announced changes until ``closed()`` or cancelled; reconnects with backoff.

        A cancellation always ends it, whatever error the client made of it (see ``_cancellation``): the
        event loop cancels it at shutdown when nobody called ``close()``, and then waits for it.
        """
        task, cancelling = current_cancelling()
        stopped = self._stopped = asyncio.Event()
        backoff = 0.5
        while not closed():
            try:
                subscription = self._subscription = await subscribe(self._backend, changed_channel(self._name))
                try:
                    backoff = 0.5
                    await self._refresh_keeping_subscription()  # catch up on what was announced meanwhile
                    while not closed():
                        if await subscription.next_message(wait_s=1.0) is not None:
                            await self._refresh_keeping_subscription()
                finally:
                    self._subscription = None
                    await self._close_quietly(subscription)
            except AgentCacheError as exc:
                raise_if_cancel_requested(task, cancelling, exc)
                if closed():
                    return
                self._telemetry.config_refresh_failed()
                log.warning(
                    "agent-cache %s: config subscription lost (%s); retrying in %.1fs", self._name, exc, backoff
                )
                with contextlib.suppress(TimeoutError):  # close() must not wait out a backoff of up to 30 s
                    async with asyncio.timeout(backoff):
                        await stopped.wait()
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _refresh_keeping_subscription(self) -> None:
        """Refresh on an announcement. A config (or tool policy) that cannot be applied is logged and counted, and
        the subscription stays: dropping it would only resubscribe and fail again, twice a second, for as long as
        the data stays bad. Only a failure of Valkey itself ends the subscription."""
        try:
            await self.refresh()
        except (AgentCacheUsageError, ConfigurationError) as exc:
            self._telemetry.config_refresh_failed()
            log.warning("agent-cache %s: could not apply the live config: %s", self._name, exc)

    async def _close_quietly(self, subscription: Subscription) -> None:
        """Close a subscription on the way out; a failure to close must not replace why we are leaving
        (a cancellation, or the error that lost the subscription)."""
        try:
            await subscription.aclose()
        except AgentCacheError as exc:
            log.debug("agent-cache %s: could not close the config subscription: %s", self._name, exc)

    async def stop_watching(self) -> None:
        """Interrupt a blocked read or a backoff; ``watch`` then sees ``closed()`` and returns."""
        if self._stopped is not None:
            self._stopped.set()
        if self._subscription is not None:
            with contextlib.suppress(AgentCacheError):
                await self._subscription.aclose()

    async def forget(self) -> None:
        await forget_instance(self._backend, self._name, self.instance_id)
