"""The only module that talks to Valkey (with its helpers ``_autopipeline`` and ``_held_connections``):
standalone or cluster clients, scripts, error translation.

Everything above this layer sees our own exception tree (see ``_errors``), never a client's.
Works with valkey-py's asyncio ``Valkey`` and ``ValkeyCluster`` (and redis-py's asyncio clients, whose
exceptions have the same names), with or without ``decode_responses``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from ._autopipeline import AutoPipeline
from ._breaker import CircuitBreaker
from ._cancellation import current_cancelling, raise_if_cancel_requested
from ._deadline import Watchdog
from ._errors import (
    AgentCacheError,
    BackendAuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    ValkeyCommandError,
)
from ._scripts import BY_SHA, Script

EncodableArg = str | bytes | int | float

_UNAVAILABLE = {"ConnectionError", "ClusterDownError", "MaxConnectionsError", "MasterDownError"}
_TIMEOUT = {"TimeoutError"}


def translate_error(exc: BaseException, command: str) -> AgentCacheError:
    """Map a client exception to our tree by class name (valkey-py and redis-py share them)."""
    if isinstance(exc, AgentCacheError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    detail = f"{type(exc).__name__}: {exc}"
    if "AuthenticationError" in names:  # a ConnectionError subclass in valkey-py: check it first
        return BackendAuthenticationError(f"Valkey refused the credentials for {command} ({detail})", command=command)
    if names & _TIMEOUT:
        return BackendTimeoutError(f"Valkey did not answer {command} in time ({detail})", command=command)
    if names & _UNAVAILABLE or isinstance(exc, OSError):
        return BackendUnavailableError(f"Valkey is unavailable for {command} ({detail})", command=command)
    return ValkeyCommandError(f"Valkey command {command} failed ({detail})", command=command)


def as_text(value: bytes | str) -> str:
    """A reply as text. Bytes that are not UTF-8 (another program wrote them: the tool policies hash and the
    discovery registry are shared) come back with ``\\xff`` escapes instead of raising in a reader that only
    wanted the rest of the reply. Everything this library writes is UTF-8, so it reads back unchanged."""
    return value.decode(errors="backslashreplace") if isinstance(value, bytes) else value


def _is_noscript(exc: BaseException) -> bool:
    return any(cls.__name__ == "NoScriptError" for cls in type(exc).__mro__) or str(exc).startswith("NOSCRIPT")


class Backend:
    """A thin async facade over one Valkey client, with a per-command timeout and a circuit breaker.

    Every command goes through :meth:`_call`: the breaker may refuse it at once (Valkey known down), the
    timeout bounds it (a paused server can't hang an agent), and client errors become ours.
    """

    __slots__ = ("_auto", "_expired", "_watchdog", "_watchdogs", "breaker", "client", "is_cluster")

    def __init__(self, client: Any, *, timeout_s: float | None = None, breaker: CircuitBreaker | None = None) -> None:
        self.client = client
        self.is_cluster = hasattr(client, "get_primaries")
        self._auto = AutoPipeline(client, timeout_s)  # holds the timeout for every command, batches included
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._expired: set[asyncio.Task[Any]] = set()  # tasks whose command the timeout cancelled
        self._watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = weakref.WeakKeyDictionary()
        self._watchdog: Watchdog | None = None  # the last loop's, looked up without the weak dict

    async def _call(
        self, command: str, send: Callable[..., Awaitable[Any]], *args: Any, script: Script | None = None
    ) -> Any:
        """``await send(*args)`` under the breaker and the timeout, errors translated. With ``script``, a
        NOSCRIPT answer (the node has not cached it) is retried as EVAL with the script's source."""
        breaker = self.breaker
        if not breaker.allow():
            raise BackendUnavailableError(
                f"Valkey is unavailable for {command}: circuit open after repeated failures, "
                f"next probe in {breaker.seconds_until_probe():.1f}s",
                command=command,
            )
        # The timeout is asyncio.timeout()'s mechanism (cancel the task at the deadline, turn that
        # cancellation into TimeoutError) without its per-call Timeout object, context copy and timer:
        # a per-loop Watchdog (see _deadline) holds the deadline.
        timeout = self._auto.timeout_s
        watchdog = None
        task = asyncio.current_task()
        # The caller's cancellations so far: one requested during the command must end it even when the
        # client swallows it or turns it into an error (see _cancellation).
        cancelling = 0 if task is None else task.cancelling()
        try:
            if timeout is not None:
                if task is None:
                    raise RuntimeError("Timeout should be used inside a task")  # asyncio.timeout()'s words
                loop = task.get_loop()
                watchdog = self._watchdog
                if watchdog is None or watchdog.loop is not loop:
                    watchdog = self._watchdog_for(loop)
                watchdog.arm(loop, task, timeout)
            try:
                result = await send(*args)
            except Exception as exc:
                if script is None or not _is_noscript(exc):
                    raise
                # args: "EVALSHA", sha, numkeys, keys, argv
                result = await self._auto.execute("EVAL", script.source, *args[2:])
        except asyncio.CancelledError as exc:
            if task is None or not self._timed_out(task, cancelling):
                raise
            breaker.record_failure()
            raise translate_error(TimeoutError(), command) from exc
        except Exception as exc:
            if task is not None:
                self._timed_out(task, cancelling)  # expired, but the client raised something else
                raise_if_cancel_requested(task, cancelling, exc)  # the client turned a cancellation into exc
            error = translate_error(exc, command)
            if isinstance(error, BackendUnavailableError | BackendTimeoutError):
                breaker.record_failure()
            else:
                breaker.record_success()  # the server answered: it is up
            raise error from exc
        finally:
            if watchdog is not None:
                watchdog.disarm(task)  # type: ignore[arg-type]  # set together with task
        if task is not None:
            if self._expired:
                self._timed_out(task, cancelling)  # the client swallowed our cancellation: consume it, like asyncio
            raise_if_cancel_requested(task, cancelling)  # ... or the caller's: raise it, the caller asked for it
        breaker.record_success()
        return result

    @property
    def timeout_s(self) -> float | None:
        """Per-command timeout (None: none)."""
        return self._auto.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float | None) -> None:
        self._auto.timeout_s = value

    def _watchdog_for(self, loop: asyncio.AbstractEventLoop) -> Watchdog:
        watchdog = self._watchdogs.get(loop)
        if watchdog is None:
            watchdog = self._watchdogs[loop] = Watchdog(loop, self._expire)
        self._watchdog = watchdog
        return watchdog

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self._expired.add(task)
        task.cancel()

    def _timed_out(self, task: asyncio.Task[Any], cancelling: int) -> bool:
        """Did our deadline cancel ``task``? Consumes that cancellation, as asyncio.timeout() does."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling

    # The hot-path calls return _call's coroutine instead of wrapping it in one more: every
    # coroutine layer costs on each of the several resumptions of a command.
    # Reads and script calls are auto-pipelined (see _autopipeline): concurrent ones share round trips.
    # String replies are bytes whatever the client's decode_responses (entries may be binary).
    def get(self, key: str) -> Awaitable[bytes | None]:
        return self._call("GET", self._auto.execute, "GET", key)

    def getex(self, key: str, seconds: int) -> Awaitable[bytes | None]:
        """GET that also sets the key's TTL to ``seconds`` (a sliding read)."""
        return self._call("GETEX", self._auto.execute, "GETEX", key, "EX", seconds)

    def run_script(self, script: Script, keys: Sequence[str], args: Sequence[EncodableArg]) -> Awaitable[Any]:
        """EVALSHA, falling back to EVAL on the node that has not cached the script yet."""
        sha = script.sha
        return self._call(script.label, self._auto.execute, "EVALSHA", sha, len(keys), *keys, *args, script=script)

    async def pipeline(self, commands: Iterable[tuple[str, Sequence[EncodableArg]]]) -> list[Any]:
        """Send commands in one non-transactional pipeline (one round trip per node involved)."""
        return await self._pipelined(commands, transaction=False)

    async def write(self, commands: Iterable[tuple[str, Sequence[EncodableArg]]]) -> None:
        """Send commands whose replies nobody reads (an error reply still raises) in one round trip: as one
        write on a connection the auto-pipeline keeps where the client allows it, else as a pipeline."""
        batch = list(commands)
        if not self._auto.keeps_connections:
            await self._pipelined(batch, transaction=False)
            return
        results = await self._call("pipeline", self._auto.execute_many, [(name, *args) for name, args in batch])
        await self._checked(batch, results)

    async def transaction(self, commands: Iterable[tuple[str, Sequence[EncodableArg]]]) -> list[Any]:
        """MULTI/EXEC for commands on keys of one slot (a cluster pipeline cannot MULTI, so there it
        sends them in order on the one connection to that slot's node)."""
        return await self._pipelined(commands, transaction=not self.is_cluster)

    async def _pipelined(self, commands: Iterable[tuple[str, Sequence[EncodableArg]]], transaction: bool) -> list[Any]:
        batch = list(commands)

        async def send() -> list[Any]:
            pipe = self.client.pipeline(transaction=transaction)
            for name, args in batch:
                pipe.execute_command(name, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results

        results: list[Any] = await self._call("MULTI" if transaction else "pipeline", send)
        return await self._checked(batch, results)

    async def _checked(self, batch: list[tuple[str, Sequence[EncodableArg]]], results: list[Any]) -> list[Any]:
        """``results`` of ``batch``, an EVALSHA that met NOSCRIPT sent again as EVAL; other errors raise."""
        for i, ((name, args), result) in enumerate(zip(batch, results, strict=True)):
            if isinstance(result, BaseException) and name == "EVALSHA" and _is_noscript(result):
                script = BY_SHA[str(args[0])]  # a node that has not cached it yet: send the source once
                eval_args = ("EVAL", script.source, *args[1:])  # args: sha, numkeys, keys, argv
                result = results[i] = await self._call(script.label, self._auto.execute, *eval_args)
            if isinstance(result, BaseException):
                raise translate_error(result, name) from result
        return results

    @staticmethod
    def script_command(
        script: Script, keys: Sequence[str], args: Sequence[EncodableArg]
    ) -> tuple[str, tuple[Any, ...]]:
        """``script`` as one command of a :meth:`pipeline` (a NOSCRIPT answer is retried with the source)."""
        return "EVALSHA", (script.sha, len(keys), *keys, *args)

    async def close(self) -> None:
        """Give the connections the auto-pipeline keeps back to the client's pool (which stays open)."""
        await self._auto.close()

    async def command(self, name: str, *args: EncodableArg) -> Any:
        return await self._call(name, self.client.execute_command, name, *args)

    async def info(self, *sections: str) -> dict[str, Any]:
        """``INFO sections`` of every primary, by node address (``host:port``): one entry when standalone.
        A node's reply is the client's parsed mapping (or the raw text from a client that does not parse it)."""
        if not self.is_cluster:
            reply = await self.command("INFO", *sections)
            pool = getattr(self.client, "connection_pool", None)
            kwargs = getattr(pool, "connection_kwargs", {})
            node = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
            return {str(node): reply}

        async def send() -> Any:
            return await self.client.execute_command("INFO", *sections, target_nodes=self.client.PRIMARIES)

        replies = await self._call("INFO", send)
        if isinstance(replies, dict) and replies and all(isinstance(v, dict | str | bytes) for v in replies.values()):
            return {as_text(node): reply for node, reply in replies.items()}
        primaries = self.client.get_primaries()  # a one-primary cluster: the reply is that node's own mapping
        return {primaries[0].name if primaries else "": replies}

    async def delete_many(self, keys: Sequence[str], batch: int = 500) -> int:
        """DEL in batches; in cluster mode one pipelined DEL per key, routed by slot."""
        deleted = 0
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            if self.is_cluster:
                deleted += sum(int(r) for r in await self.pipeline(("DEL", (key,)) for key in chunk))
            elif chunk:
                deleted += int(await self.command("DEL", *chunk))
        return deleted

    async def scan(self, pattern: str, count: int = 1000) -> AsyncGenerator[str, None]:
        """SCAN every primary for keys matching ``pattern`` (only flush() needs this)."""
        nodes = self.client.get_primaries() if self.is_cluster else [None]
        for node in nodes:
            cursor: Any = 0
            target: dict[str, Any] = {} if node is None else {"target_nodes": node}
            while True:

                def send(position: Any = cursor, where: dict[str, Any] = target) -> Awaitable[Any]:
                    scanned: Awaitable[Any] = self.client.scan(position, match=pattern, count=count, **where)
                    return scanned

                cursor, keys = await self._call("SCAN", send)
                if isinstance(cursor, dict):  # ValkeyCluster answers {node_name: cursor}
                    cursor = next(iter(cursor.values()))
                for key in keys:
                    yield as_text(key)
                if int(cursor) == 0:
                    break


class Subscription:
    """A pub/sub subscription to one channel; ``next_message`` returns its data or None on timeout."""

    def __init__(self, pubsub: Any, owned_client: Any | None) -> None:
        self._pubsub = pubsub
        self._owned_client = owned_client

    async def next_message(self, wait_s: float) -> str | None:
        task, cancelling = current_cancelling()
        try:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
        except Exception as exc:
            raise_if_cancel_requested(task, cancelling, exc)
            raise translate_error(exc, "SUBSCRIBE") from exc
        raise_if_cancel_requested(task, cancelling)
        if message is None or message.get("type") != "message":
            return None
        return as_text(message["data"])

    async def aclose(self) -> None:
        task, cancelling = current_cancelling()
        try:
            await self._pubsub.aclose()
            if self._owned_client is not None:
                await self._owned_client.aclose()
        except Exception as exc:
            raise_if_cancel_requested(task, cancelling, exc)
            raise translate_error(exc, "UNSUBSCRIBE") from exc
        raise_if_cancel_requested(task, cancelling)


async def subscribe(backend: Backend, channel: str) -> Subscription:
    """Subscribe to ``channel``. valkey-py's asyncio cluster client has no pubsub(); a classic PUBLISH
    reaches every node of a cluster, so there we subscribe on a plain connection to one primary."""
    owned: Any = None
    pubsub: Any = None
    task, cancelling = current_cancelling()
    try:
        if backend.is_cluster:
            from valkey.asyncio import ConnectionPool, Valkey

            await backend.client.initialize()
            node = backend.client.get_primaries()[0]
            pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            owned = Valkey.from_pool(pool)
            pubsub = owned.pubsub()
        else:
            pubsub = backend.client.pubsub()
        await pubsub.subscribe(channel)
        raise_if_cancel_requested(task, cancelling)  # the client swallowed a cancellation
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the connection goes back; the first error is the one to report
            if pubsub is not None:
                await pubsub.aclose()
            if owned is not None:
                await owned.aclose()
        if not isinstance(exc, Exception):
            raise
        raise_if_cancel_requested(task, cancelling, exc)
        raise translate_error(exc, "SUBSCRIBE") from exc
    return Subscription(pubsub, owned)
