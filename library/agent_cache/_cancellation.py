"""Cancellation that a client lost on the way, found again.

A task's ``cancelling()`` count goes up with every ``cancel()`` and down only when someone consciously
consumes one (``uncancel()``, as ``asyncio.timeout()`` does for its own). Two things below us lose a
cancellation without consuming it: Python 3.11's ``asyncio.wait_for`` returns the inner result when the
outer task is cancelled just as the inner one finishes (valkey-py wraps socket writes in it when a
``socket_timeout`` is set), and a client's error path may turn the ``CancelledError`` into its own
``ConnectionError``. A loop that retries on errors then never ends, and ``asyncio.run()`` waits for it
for ever. So code that must end on cancellation compares the count with the one it started with and
raises ``CancelledError`` itself.
"""

from __future__ import annotations

import asyncio
from typing import Any


def current_cancelling() -> tuple[asyncio.Task[Any] | None, int]:
    """The running task (None outside one, or without a running loop) and its ``cancelling()`` count."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a coroutine being closed by the garbage collector
        return None, 0
    return task, 0 if task is None else task.cancelling()


def cancel_requested(task: asyncio.Task[Any] | None, baseline: int) -> bool:
    """Was ``task`` cancelled since its count was ``baseline`` (whether or not it saw a CancelledError)?"""
    return task is not None and task.cancelling() > baseline


def raise_if_cancel_requested(
    task: asyncio.Task[Any] | None, baseline: int, cause: BaseException | None = None
) -> None:
    """Raise the ``CancelledError`` a client swallowed or turned into ``cause``."""
    if task is not None and task.cancelling() > baseline:
        raise asyncio.CancelledError() from cause
