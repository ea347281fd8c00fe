"""The watchdog behind per-command timeouts: one timer per loop, every due task expired, none early."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from agent_cache._deadline import Watchdog


class Expired:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def __call__(self, task: asyncio.Task[Any]) -> None:
        self.tasks.append(task)
        task.cancel()


async def _waiter(watchdog: Watchdog, timeout_s: float, hold_s: float) -> str:
    task = asyncio.current_task()
    assert task is not None
    watchdog.arm(asyncio.get_running_loop(), task, timeout_s)
    try:
        await asyncio.sleep(hold_s)
        return "finished"
    except asyncio.CancelledError:
        return "expired"
    finally:
        watchdog.disarm(task)


async def test_only_the_tasks_past_their_deadline_expire() -> None:
    expired = Expired()
    watchdog = Watchdog(asyncio.get_running_loop(), expired)
    results = await asyncio.gather(
        _waiter(watchdog, 0.05, 0.5),  # stalls past its deadline
        _waiter(watchdog, 0.5, 0.01),  # finishes in time
        _waiter(watchdog, 0.1, 0.5),
        _waiter(watchdog, 5.0, 0.2),
    )
    assert results == ["expired", "finished", "expired", "finished"]
    assert len(expired.tasks) == 2


async def test_a_shorter_deadline_armed_later_is_not_delayed_by_a_longer_one() -> None:
    expired = Expired()
    watchdog = Watchdog(asyncio.get_running_loop(), expired)
    long_one = asyncio.create_task(_waiter(watchdog, 30.0, 60.0))
    await asyncio.sleep(0.01)
    assert await asyncio.wait_for(_waiter(watchdog, 0.05, 60.0), timeout=5) == "expired"
    long_one.cancel()
    await asyncio.gather(long_one, return_exceptions=True)


async def test_a_disarmed_task_is_never_expired_even_when_the_timer_fires() -> None:
    expired = Expired()
    watchdog = Watchdog(asyncio.get_running_loop(), expired)
    assert await _waiter(watchdog, 0.05, 0.0) == "finished"
    await asyncio.sleep(0.1)  # the timer set for that deadline fires and finds nothing due
    assert expired.tasks == []


async def test_hundreds_of_overlapping_deadlines_each_expire_on_their_own() -> None:
    expired = Expired()
    watchdog = Watchdog(asyncio.get_running_loop(), expired)
    results = await asyncio.gather(*(_waiter(watchdog, 0.05 + i / 1000, 0.0 if i % 2 else 1.0) for i in range(200)))
    assert results.count("expired") == 100
    assert results.count("finished") == 100


def test_a_watchdog_does_not_keep_its_loop_alive() -> None:
    loop = asyncio.new_event_loop()
    watchdog = Watchdog(loop, Expired())
    loop.run_until_complete(_waiter(watchdog, 60.0, 0.0))  # its timer is still set when the loop closes
    loop.close()
    loop_ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert loop_ref() is None
    assert watchdog.loop is None
