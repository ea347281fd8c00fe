"""A lock for the running event loop, for objects that outlive loops.

An ``asyncio.Lock`` binds itself to the first loop in which two callers contend for it, and from then on
raises ``RuntimeError`` in any other loop. A cache need not be closed (module-level caches, ``asyncio.run``
after ``asyncio.run``, a loop per test), so its locks must serve whatever loop is running: a new loop gets
a new lock. Callers in different loops never share a lock, and never need to: they cannot await each other.
"""

from __future__ import annotations

import asyncio


class LoopLock:
    """``async with lock.held():`` — an ``asyncio.Lock`` of the running loop."""

    __slots__ = ("_lock", "_loop")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    def held(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A lock of an ended loop may still look held by a task that loop never finished.
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock
