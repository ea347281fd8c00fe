"""The wire side of the near-cache: Valkey's server-assisted client-side caching, spoken directly.

Per node, two connections of our own (not valkey-py's client cache, which serves stale values once its
tracked connection is killed):

- an :class:`InvalidationLink`: a plain non-blocking socket subscribed to ``__redis__:invalidate``. It is
  read by the event loop *and* synchronously before every L1 lookup (one non-blocking ``recv``), so an
  invalidation already delivered to this process is applied before any answer is served from memory.
- a :class:`TrackedReader`: a pipelined connection with ``CLIENT TRACKING on REDIRECT <link id>``; an L1 miss
  reads ``GET`` + ``PTTL`` on it in one round trip, so the server remembers that we hold the key.

Both speak RESP2 through the small parser below. Nothing here decides what to cache: see ``_near_cache``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

INVALIDATE_CHANNEL = b"__redis__:invalidate"
_RECV_BYTES = 65536


class RespError(str):
    """An error reply (``-ERR ...``), returned as a value: one bad reply must not break the stream."""


class TrackingRefusedError(Exception):
    """The server refused something tracking needs (ACL, an old server, a proxy): L1 must stay off."""


class LinkLostError(ConnectionError):
    """A connection of the near-cache closed or stopped answering."""


class ReadTimeoutError(LinkLostError):
    """A tracked read got no answer within the backend's timeout."""


def encode_command(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _IncompleteError(Exception):
    pass


class RespParser:
    """Incremental RESP2 reader: ``feed`` bytes, then iterate the complete values."""

    __slots__ = ("_buffer", "_pos")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def values(self) -> Iterator[Any]:
        while True:
            start = self._pos
            try:
                value = self._value()
            except _IncompleteError:
                self._pos = start
                break
            yield value
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0

    def _line(self) -> bytes:
        end = self._buffer.find(b"\r\n", self._pos)
        if end < 0:
            raise _IncompleteError
        line = bytes(self._buffer[self._pos : end])
        self._pos = end + 2
        return line

    def _value(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            end = self._pos + length
            if len(self._buffer) < end + 2:
                raise _IncompleteError
            data = bytes(self._buffer[self._pos : end])
            self._pos = end + 2
            return data
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._value() for _ in range(count)]
        raise LinkLostError(f"unexpected RESP2 reply type {kind!r}")


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: taken from the user's own client, so AUTH and the database match."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    connect_timeout_s: float = 2.0
    tls: ssl.SSLContext | None = field(default=None, compare=False)
    """The TLS context of the user's own connections (None: plain TCP)."""

    @property
    def name(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    @classmethod
    def from_connection_kwargs(cls, kwargs: Mapping[str, Any], connection_class: Any = None) -> Endpoint:
        """The endpoint of a valkey-py connection pool's (or cluster node's) ``connection_kwargs``."""
        tls = None
        if "SSL" in getattr(connection_class, "__name__", ""):
            # The client's own connection class builds the context, so certificates, CA and checks are the same.
            context = getattr(connection_class(**kwargs), "ssl_context", None)
            tls = context.get() if context is not None else None
            if not isinstance(tls, ssl.SSLContext):
                raise TrackingRefusedError(f"cannot take the TLS settings of {connection_class.__name__}")
        username, password = kwargs.get("username") or None, kwargs.get("password") or None
        provider = kwargs.get("credential_provider")
        if provider is not None:
            credentials = tuple(provider.get_credentials())
            username, password = (None, *credentials) if len(credentials) == 1 else credentials[:2]
        timeout = kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout") or 2.0
        return cls(
            host=str(kwargs.get("host") or "127.0.0.1"),
            port=int(kwargs.get("port") or 6379),
            path=kwargs.get("path") or None,
            username=username,
            password=password,
            db=int(kwargs.get("db") or 0),
            connect_timeout_s=float(timeout),
            tls=tls,
        )

    def handshake(self) -> list[tuple[str | int, ...]]:
        """The commands that authenticate a new connection like the user's client does."""
        commands: list[tuple[str | int, ...]] = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        return commands


async def _io(loop: asyncio.AbstractEventLoop, sock: socket.socket, operation: Callable[..., Any], *args: Any) -> Any:
    """``operation(*args)`` on a non-blocking (maybe TLS) socket, waiting for it to be ready as often as needed
    (asyncio's sock_* helpers refuse TLS sockets)."""
    while True:
        try:
            return operation(*args)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            ready = loop.add_reader
            remove = loop.remove_reader
        except ssl.SSLWantWriteError:
            ready = loop.add_writer
            remove = loop.remove_writer
        waiter: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()
        ready(fd, _wake, waiter)
        try:
            await waiter
        finally:
            remove(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_REFUSALS = ("NOPERM", "ERR unknown", "ERR Unknown", "ERR syntax", "ERR wrong number")


def _refusal(command: tuple[str | int, ...], reply: Any) -> None:
    """Raise if ``reply`` to a setup command is an error: a refusal for good, or a passing state (LOADING...)."""
    if not isinstance(reply, RespError):
        return
    what = " ".join(str(part) for part in command[:2])
    if command[0] != "AUTH" and reply.startswith(_REFUSALS):
        raise TrackingRefusedError(f"{what}: {reply}")
    raise LinkLostError(f"{what}: {reply}")  # a wrong password is for the client's own calls to report


class InvalidationLink:
    """One subscribed connection that receives the invalidations of every key our readers track on a node.

    ``drain()`` applies whatever has arrived, without waiting; ``ping()`` sends a heartbeat whose pong proves
    that every invalidation the server sent before it has been applied (one TCP stream keeps them in order).
    """

    def __init__(self, on_invalidate: Callable[[list[bytes] | None], None], on_lost: Callable[[str], None]) -> None:
        self.client_id = -1
        self.trusted_until = 0.0
        """``time.monotonic()`` until which this link is known to deliver: a pong's PING time + the trust window."""
        self._on_invalidate = on_invalidate
        self._on_lost = on_lost
        self._sock: socket.socket | None = None
        self._poll = select.poll()  # readable or closed, asked without raising (cheaper than recv's EAGAIN)
        self._parser = RespParser()
        self._pings: collections.deque[float] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._trust_s = 1.0

    async def open(self, endpoint: Endpoint, trust_s: float) -> None:
        """Connect, authenticate, learn our client id and subscribe; then the loop reads the socket."""
        loop = asyncio.get_running_loop()
        self._trust_s = trust_s
        family = socket.AF_UNIX if endpoint.path else socket.AF_INET
        if not endpoint.path and ":" in endpoint.host:
            family = socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        self._sock = sock
        try:
            async with asyncio.timeout(endpoint.connect_timeout_s):
                await loop.sock_connect(sock, endpoint.path or (endpoint.host, endpoint.port))
                if family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if endpoint.tls is not None:
                    sock = self._sock = endpoint.tls.wrap_socket(
                        sock, server_hostname=endpoint.host, do_handshake_on_connect=False
                    )
                    await _io(loop, sock, sock.do_handshake)
                for command in endpoint.handshake():
                    _refusal(command, await self._request(loop, command))
                client_id = await self._request(loop, ("CLIENT", "ID"))
                _refusal(("CLIENT", "ID"), client_id)
                subscribe = ("SUBSCRIBE", INVALIDATE_CHANNEL.decode())
                _refusal(subscribe, await self._request(loop, subscribe))
        except BaseException:
            self.close()
            raise
        self.client_id = int(client_id)
        self.trusted_until = time.monotonic() + trust_s  # the server just answered on this stream
        self._loop = loop
        self._poll.register(sock.fileno(), select.POLLIN)
        loop.add_reader(sock.fileno(), self.drain)

    async def _request(self, loop: asyncio.AbstractEventLoop, command: tuple[str | int, ...]) -> Any:
        sock = self._sock
        assert sock is not None
        data = memoryview(encode_command(*command))
        while data:
            data = data[await _io(loop, sock, sock.send, data) :]
        while True:
            for value in self._parser.values():
                return value
            data = await _io(loop, sock, sock.recv, _RECV_BYTES)
            if not data:
                raise LinkLostError(f"{command[0]}: connection closed")
            self._parser.feed(data)

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def drain(self) -> None:
        """Apply every message already received (a non-blocking read: nothing waiting costs one syscall)."""
        sock = self._sock
        if sock is None or not self._poll.poll(0):
            return
        received = False
        while True:  # until the socket (and, with TLS, its decrypted buffer) is empty
            try:
                data = sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:
                self._lose(f"invalidation link failed: {exc}")
                return
            if not data:
                self._lose("invalidation link closed by the server")
                return
            self._parser.feed(data)
            received = True
        if received:
            self._dispatch()

    def _dispatch(self) -> None:
        try:
            for message in self._parser.values():
                self._handle(message)
        except (LinkLostError, ValueError) as exc:
            self._lose(f"unreadable message on the invalidation link: {exc}")

    def _handle(self, message: Any) -> None:
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind == b"message" and len(message) == 3 and message[1] == INVALIDATE_CHANNEL:
            keys = message[2]
            self._on_invalidate(keys if isinstance(keys, list) else None)  # None: FLUSHALL / FLUSHDB
        elif kind == b"pong" and self._pings:
            self.trusted_until = self._pings.popleft() + self._trust_s

    def ping(self, now: float) -> None:
        """Send a heartbeat; a link whose oldest unanswered PING is older than the caller's bound is lost."""
        sock = self._sock
        if sock is None:
            return
        try:
            sock.send(b"*1\r\n$4\r\nPING\r\n")
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # a full send buffer: the unanswered pings will say whether the link is dead
        except OSError as exc:
            self._lose(f"invalidation link failed: {exc}")
            return
        self._pings.append(now)

    def unanswered_since(self) -> float | None:
        return self._pings[0] if self._pings else None

    def _lose(self, reason: str) -> None:
        if self._sock is None:
            return
        self.close()
        self._on_lost(reason)

    def close(self) -> None:
        """Stop reading and close the socket (synchronous: safe from a loop's shutdown or a finalizer)."""
        sock, self._sock = self._sock, None
        self.trusted_until = 0.0
        self._pings.clear()
        if sock is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._poll.unregister(sock.fileno())
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()


class TrackedReader(asyncio.Protocol):
    """A pipelined connection whose reads the server tracks for one :class:`InvalidationLink`.

    Replies come back in the order commands were sent; each request waits for a fixed number of them.
    """

    def __init__(self, on_lost: Callable[[TrackedReader, str], None]) -> None:
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._parser = RespParser()
        self._waiting: collections.deque[tuple[asyncio.Future[Any], int, list[Any], float]] = collections.deque()
        self._outbox: list[bytes] = []  # requests of this loop iteration, written together (one syscall)
        self._closed = False

    @classmethod
    async def open(
        cls, endpoint: Endpoint, redirect_id: int, on_lost: Callable[[TrackedReader, str], None]
    ) -> TrackedReader:
        loop = asyncio.get_running_loop()
        reader = cls(on_lost)
        async with asyncio.timeout(endpoint.connect_timeout_s):
            if endpoint.path:
                await loop.create_unix_connection(lambda: reader, endpoint.path, ssl=endpoint.tls)
            else:
                await loop.create_connection(lambda: reader, endpoint.host, endpoint.port, ssl=endpoint.tls)
            try:
                setup = [*endpoint.handshake()]
                if endpoint.db:
                    setup.append(("SELECT", endpoint.db))
                setup.append(("CLIENT", "TRACKING", "on", "REDIRECT", redirect_id))
                for command in setup:
                    _refusal(command, await reader.request(command))
            except BaseException:
                reader.close()
                raise
        return reader

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, *commands: tuple[str | int, ...]) -> asyncio.Future[Any]:
        """Send ``commands`` at once; the future gets their replies (one reply alone when one command)."""
        transport = self._transport
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if transport is None or self._closed:
            future.set_exception(LinkLostError("tracked connection closed"))
            return future
        data = b"".join(encode_command(*command) for command in commands)
        if not self._waiting:
            transport.write(data)  # idle: no reason to wait
        else:
            if not self._outbox:
                future.get_loop().call_soon(self._flush)
            self._outbox.append(data)
        self._waiting.append((future, len(commands), [], time.monotonic()))
        return future

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        if self._transport is not None and outbox:
            self._transport.write(b"".join(outbox))

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        waiting = self._waiting
        try:
            for value in parser.values():
                if not waiting:
                    raise LinkLostError("a reply nobody asked for")
                future, count, replies, _ = waiting[0]
                replies.append(value)
                if len(replies) == count:
                    waiting.popleft()
                    if not future.done():
                        future.set_result(replies if count > 1 else value)
        except (LinkLostError, ValueError) as exc:
            self._fail(f"unreadable reply on the tracked connection: {exc}")

    def oldest_request_since(self) -> float | None:
        return self._waiting[0][3] if self._waiting else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("tracked connection closed" + (f": {exc}" if exc else ""))

    def time_out(self) -> None:
        """The oldest request waited too long: fail every request (the caller's timeout) and close."""
        self._fail("no answer in time", ReadTimeoutError)

    def _fail(self, reason: str, error: type[LinkLostError] = LinkLostError) -> None:
        first = not self._closed
        self.close()
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(error(reason))
        if first:
            self._on_lost(self, reason)

    @property
    def is_open(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()  # nothing of ours waits for its buffer
        while self._waiting:  # in-flight reads fail over to the backend
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(LinkLostError("tracked connection closed"))
