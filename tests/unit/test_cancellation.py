"""Finding a cancellation that lower layers swallowed or turned into an error (``_cancellation``)."""

from __future__ import annotations

import asyncio

import pytest

from agent_cache._cancellation import cancel_requested, current_cancelling, raise_if_cancel_requested


async def test_a_swallowed_cancellation_is_found_and_raised_again() -> None:
    async def swallowing_client() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "reply"  # what Python 3.11's wait_for does when the inner call has just finished
        return "never"

    async def command() -> str:
        task, baseline = current_cancelling()
        reply = await swallowing_client()
        raise_if_cancel_requested(task, baseline)
        return reply

    victim = asyncio.ensure_future(command())
    await asyncio.sleep(0)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim


async def test_a_cancellation_made_into_an_error_becomes_a_cancellation_again() -> None:
    async def command() -> None:
        task, baseline = current_cancelling()
        try:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise ConnectionError("Connection closed by server") from None  # a client's error path
        except ConnectionError as exc:
            raise_if_cancel_requested(task, baseline, exc)
            raise

    victim = asyncio.ensure_future(command())
    await asyncio.sleep(0)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim


async def test_cancellations_before_the_call_or_consumed_by_a_timeout_do_not_count() -> None:
    task, baseline = current_cancelling()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):  # cancels this task, then consumes that cancellation
            await asyncio.sleep(1)
    assert not cancel_requested(task, baseline)
    raise_if_cancel_requested(task, baseline)  # nothing to raise
    assert task is asyncio.current_task()


def test_without_a_running_loop_there_is_no_task() -> None:
    assert current_cancelling() == (None, 0)
    assert not cancel_requested(None, 0)
