"""Auto-pipelining of the hot single commands (reads and script calls): concurrent ones share round trips.

A client library spends most of a cache hit's CPU on its own per-command machinery (take a connection,
pack, write, read, parse, give it back: ~40 µs of Python in valkey-py), not on the bytes. Up to
``MAX_IN_FLIGHT`` commands are sent at once, each on its own; one that arrives while that many are in
flight queues, and when one of them returns, everything queued goes as one pipeline (one write, one read
pass). Nothing ever waits for a batch to fill: the sequential path is the plain command, and under load
many concurrent hits share each round trip. Single commands go on connections kept for them (see
``_held_connections``) where the client allows it.

Replies come back as bytes whatever the client's ``decode_responses`` (entries may be binary), with no
response callbacks applied: only commands whose raw replies are what callers expect come here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from valkey.client import NEVER_DECODE

from ._cancellation import current_cancelling, raise_if_cancel_requested
from ._held_connections import HeldConnections

_AS_BYTES = {NEVER_DECODE: True}
_MAX_BATCH = 512
MAX_IN_FLIGHT = 4
"""Sends (single commands or batches) in flight at once. Measured with 4, 16 and 64 concurrent hits: one at a time
makes 4 readers wait on each other (~35 % fewer hits per second than no pipelining); four keeps that case at
no-pipelining speed and batches as well as one under heavy load."""


class AutoPipeline:
    """Sends single commands for one client, coalescing those that arrive while it is busy.

    Errors are the client's own exceptions (the caller translates them); a batch that gets no answer in
    ``timeout_s`` fails every command in it, so a dead connection cannot stall those queued behind it.
    """

    __slots__ = ("_client", "_held", "_in_flight", "_loop", "_queue", "_tasks", "timeout_s")

    def __init__(self, client: Any, timeout_s: float | None) -> None:
        self._client = client
        self._held = HeldConnections.for_client(client)
        self.timeout_s = timeout_s
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute(self, *command: Any) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await self._moved_to(loop)
        if self._in_flight < MAX_IN_FLIGHT:
            self._in_flight += 1
            try:
                if self._held is not None:
                    return await self._held.execute(HeldConnections.send_one, command, self.timeout_s is not None)
                return await self._client.execute_command(*command, **_AS_BYTES)
            finally:
                self._send_queued()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        return await future

    @property
    def keeps_connections(self) -> bool:
        """Can :meth:`execute_many` send on a kept connection (a plain standalone client)?"""
        return self._held is not None

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in order in one write: on a kept connection, or (all busy) as a pipeline of the
        client's own; the replies in order, an error reply in its command's place (not raised)."""
        assert self._held is not None, "only where keeps_connections"
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await self._moved_to(loop)
        if self._in_flight >= MAX_IN_FLIGHT:  # not queued: a batch boundary could split (and reorder) them
            return await self._client_pipeline(commands)
        self._in_flight += 1
        try:
            replies: list[Any] = await self._held.execute(
                HeldConnections.send_many, commands, self.timeout_s is not None
            )
            return replies
        finally:
            self._send_queued()

    async def _client_pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``commands`` as one pipeline of the client's own (its pool, its routing); error replies in place."""
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command, **_AS_BYTES)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _moved_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or a new event loop (a closed one may have left a send unfinished)."""
        self._loop, self._in_flight, self._queue = loop, 0, []
        if self._held is not None:
            await self._held.close()

    def _send_queued(self) -> None:
        """After a send returns: pass the queue on to a batch, or become idle."""
        while self._queue and self._queue[0][1].done():  # waiters cancelled meanwhile (their own timeout)
            self._queue.pop(0)
        if not self._queue:
            self._in_flight -= 1
            return
        batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
        task = asyncio.get_running_loop().create_task(self._send_batch(batch))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await self._client_pipeline([command for command, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            task, _ = current_cancelling()
            raise_if_cancel_requested(task, 0, exc)  # the client made exc of the loop's shutdown: end as asked
        except asyncio.CancelledError:  # the loop is shutting down: the reads fail, they are not cancelled
            for _, future in batch:
                if not future.done():
                    future.set_exception(ConnectionError("the auto-pipeline was cancelled"))
            raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._send_queued()

    async def close(self) -> None:
        """Give back the connections kept for single commands (later commands take them again)."""
        if self._held is not None:
            await self._held.close()
