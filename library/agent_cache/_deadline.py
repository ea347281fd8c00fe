"""Per-command deadlines without a timer per command.

``asyncio.timeout()`` (or ``loop.call_at`` per call) pushes one timer onto the event loop's heap for every
command and cancels it when the command returns. Under 64 concurrent cache hits that churn costs about a
tenth of a hit. A :class:`Watchdog` instead records ``task -> deadline`` in a dict (an insert and a delete
per command) and keeps one timer per loop, set for the earliest deadline it holds; when it fires it hands
every task whose deadline passed to ``on_expire``.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable
from typing import Any

# A timer may fire this much before its deadline (asyncio runs timers due within its clock resolution);
# a task whose deadline is this close counts as expired rather than being re-armed for a few nanoseconds.
_SLACK_S = 0.0005


class Watchdog:
    """Deadlines of the tasks of one event loop.

    Holds its loop weakly and no timer handle (a handle references its loop), so a loop that is closed
    and dropped is collected even while one of its timers was still set.
    """

    __slots__ = ("_deadlines", "_loop", "_on_expire", "_wake_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expire: Callable[[asyncio.Task[Any]], None]) -> None:
        self._loop = weakref.ref(loop)
        self._on_expire = on_expire
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._wake_at: float | None = None  # when the earliest timer set is due (None: no timer set)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop()

    def arm(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], timeout_s: float) -> None:
        """Expire ``task`` (of ``loop``, this watchdog's) in ``timeout_s`` unless disarmed first."""
        deadline = loop.time() + timeout_s
        self._deadlines[task] = deadline
        if self._wake_at is None or deadline < self._wake_at:
            self._schedule(loop, deadline)

    def disarm(self, task: asyncio.Task[Any]) -> None:
        # The timer stays set for a deadline that may no longer exist: firing finds nothing due and
        # re-arms for the earliest remaining one, so a command never pays for a timer of its own.
        self._deadlines.pop(task, None)

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        # A later timer already set is not cancelled: it fires, finds nothing new and sets nothing.
        self._wake_at = when
        loop.call_at(when, self._fire, when, context=contextvars.Context())

    def _fire(self, when: float) -> None:
        if when == self._wake_at:
            self._wake_at = None
        loop = self._loop()
        if loop is None:
            return
        due = loop.time() + _SLACK_S
        expired = [task for task, deadline in self._deadlines.items() if deadline <= due]
        for task in expired:
            del self._deadlines[task]
            self._on_expire(task)
        if self._deadlines:
            earliest = min(self._deadlines.values())
            if self._wake_at is None or earliest < self._wake_at:
                self._schedule(loop, earliest)
