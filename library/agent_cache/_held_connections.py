"""Single commands on connections the cache keeps for them, past valkey-py's per-command pool checkout.

``Valkey.execute_command`` takes a connection from the pool, polls its socket under an ``async_timeout(0)``
to make sure nobody left a reply in it, and hands it back: ~15 µs of Python per command, a tenth of a
loopback cache hit. The auto-pipeline instead keeps the connections its single commands use (at most
``MAX_IN_FLIGHT``, as many as it has in flight at once anyway), taken from the client's pool with all its
checks and used by nothing else, so no other code can leave a reply in one. They still count as the
pool's connections in use, so closing the client closes them; ``close`` gives them back.

While the backend bounds every command with its own deadline, the kept connections drop the client's
``socket_timeout``: with one set, valkey-py wraps each write in ``asyncio.wait_for`` (a new task, one more
turn of the event loop) and each read in an ``async_timeout``, a second timer for the same command.

A connection that fails or is cancelled mid-command is disconnected (valkey-py does it; so do we, to be
sure), and reconnects on its next use. A command on a kept connection that the server has closed meanwhile
(restart, idle ``timeout``) is sent once more, on a new connection. Everything sent here is safe to repeat:
reads, and scripts written to be (a repeated write stores the same thing, the stats flush applies each
batch id once); a repeated delete whose first reply was lost reports fewer deletions, not a wrong state.

Only plain standalone clients qualify (``for_client``); cluster clients, single-connection clients,
client-side caching and blocking pools (whose other users would wait on connections kept idle) keep the
client's own path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from valkey.asyncio import BlockingConnectionPool, Valkey
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import ResponseError


class HeldConnections:
    __slots__ = ("_idle", "_pool", "_socket_timeout")

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._idle: list[Any] = []
        self._socket_timeout: float | None = None  # the pool's, put back on the connections it gets back

    @classmethod
    def for_client(cls, client: Any) -> HeldConnections | None:
        """Connections for ``client``'s single commands, or None where the client's own path must be kept."""
        if not isinstance(client, Valkey) or client.single_connection_client:
            return None
        pool = client.connection_pool
        if isinstance(pool, BlockingConnectionPool):
            return None
        if pool.connection_kwargs.get("cache_enabled") or pool.connection_kwargs.get("client_cache"):
            return None  # reads must go through the client-side cache
        return cls(pool)

    async def execute(self, send: Callable[[Any, Any], Awaitable[Any]], commands: Any, bounded: bool) -> Any:
        """``await send(connection, commands)`` on a kept connection: ``send_one`` or ``send_many``.
        ``bounded``: the caller cancels the command at its deadline, so no socket timeout is needed."""
        idle = self._idle
        kept = bool(idle)  # else fresh from the pool, which has just checked it
        if kept:
            connection = idle.pop()
        else:
            connection = await self._pool.get_connection("_")  # (valkey-py's pools ignore the command name)
            self._socket_timeout = connection.socket_timeout
        connection.socket_timeout = None if bounded else self._socket_timeout
        try:
            try:
                reply = await send(connection, commands)
            except ValkeyConnectionError:
                if not kept:
                    raise
                reply = await send(connection, commands)  # closed while idle: valkey-py disconnected it
        except ResponseError:  # an error reply, read whole (NOSCRIPT, WRONGTYPE...): the connection is fine
            idle.append(connection)
            raise
        except BaseException:
            # A half-read reply must never meet the next command. A failure to disconnect (a closed loop's
            # stream) must not replace why we are leaving: a cancellation stays a cancellation.
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            idle.append(connection)
            raise
        idle.append(connection)
        return reply

    @staticmethod
    async def send_one(connection: Any, command: tuple[Any, ...]) -> Any:
        """One command's reply as bytes (an error reply raises valkey-py's exception)."""
        await connection.send_packed_command(connection.pack_command(*command))
        return await connection.read_response(disable_decoding=True)

    @staticmethod
    async def send_many(connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Every command's reply as bytes, in one write; an error reply is returned in its place."""
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response(disable_decoding=True))
            except ResponseError as exc:  # the reply was read whole: the connection stays in step
                replies.append(exc)
        return replies

    async def close(self) -> None:
        """Give the kept connections back to the pool (also when another event loop takes over: their
        streams belong to the old one, and the pool handles such connections as it does its own)."""
        kept, self._idle = self._idle, []
        for connection in kept:
            connection.socket_timeout = self._socket_timeout
            await self._pool.release(connection)
