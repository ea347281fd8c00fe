"""The only module that talks to Valkey: standalone or cluster clients, scripts, error translation.

Everything above this layer sees our own exception tree (see ``_errors``), never a client's.
Works with valkey-py's asyncio ``Valkey`` and ``ValkeyCluster`` (and redis-py's asyncio clients, whose
exceptions have the same names), with or without ``decode_responses``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from ._errors import (
    AgentCacheError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ValkeyCommandError,
)
from ._scripts import Script

EncodableArg = str | bytes | int | float

_UNAVAILABLE = {"ConnectionError", "ClusterDownError", "MaxConnectionsError", "MasterDownError"}
_TIMEOUT = {"TimeoutError"}


def translate_error(exc: BaseException, command: str) -> AgentCacheError:
    """Map a client exception to our tree by class name (valkey-py and redis-py share them)."""
    if isinstance(exc, AgentCacheError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    detail = f"{type(exc).__name__}: {exc}"
    if names & _TIMEOUT:
        return BackendTimeoutError(f"Valkey did not answer {command} in time ({detail})", command=command)
    if names & _UNAVAILABLE or isinstance(exc, OSError):
        return BackendUnavailableError(f"Valkey is unavailable for {command} ({detail})", command=command)
    return ValkeyCommandError(f"Valkey command {command} failed ({detail})", command=command)


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _is_noscript(exc: BaseException) -> bool:
    return any(cls.__name__ == "NoScriptError" for cls in type(exc).__mro__) or str(exc).startswith("NOSCRIPT")


class Backend:
    """A thin async facade over one Valkey client."""

    __slots__ = ("client", "is_cluster")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.is_cluster = hasattr(client, "get_primaries")

    async def get(self, key: str) -> bytes | str | None:
        try:
            value: bytes | str | None = await self.client.get(key)
        except Exception as exc:
            raise translate_error(exc, "GET") from exc
        return value

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[EncodableArg]) -> Any:
        """EVALSHA, falling back to EVAL on the node that has not cached the script yet."""
        try:
            try:
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)
            except Exception as exc:
                if not _is_noscript(exc):
                    raise
                return await self.client.eval(script.source, len(keys), *keys, *args)
        except Exception as exc:
            raise translate_error(exc, f"script {script.name}") from exc

    async def pipeline(self, commands: Iterable[tuple[str, Sequence[EncodableArg]]]) -> list[Any]:
        """Send commands in one non-transactional pipeline (one round trip per node involved)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            names = []
            for name, args in commands:
                names.append(name)
                pipe.execute_command(name, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            raise translate_error(exc, "pipeline") from exc
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                raise translate_error(result, name) from result
        return results

    async def transaction(self, commands: Iterable[tuple[str, Sequence[EncodableArg]]]) -> list[Any]:
        """MULTI/EXEC for commands on keys of one slot (a cluster pipeline cannot MULTI, so there it
        sends them in order on the one connection to that slot's node)."""
        if self.is_cluster:
            return await self.pipeline(commands)
        try:
            pipe = self.client.pipeline(transaction=True)
            for name, args in commands:
                pipe.execute_command(name, *args)
            results: list[Any] = await pipe.execute()
        except Exception as exc:
            raise translate_error(exc, "MULTI") from exc
        return results

    async def command(self, name: str, *args: EncodableArg) -> Any:
        try:
            return await self.client.execute_command(name, *args)
        except Exception as exc:
            raise translate_error(exc, name) from exc

    async def delete_many(self, keys: Sequence[str], batch: int = 500) -> int:
        """DEL in batches; in cluster mode the client splits each batch by slot."""
        deleted = 0
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            try:
                if self.is_cluster:
                    results = await self.pipeline(("DEL", (key,)) for key in chunk)
                    deleted += sum(int(r) for r in results)
                else:
                    deleted += int(await self.client.delete(*chunk))
            except BackendError:
                raise
            except Exception as exc:
                raise translate_error(exc, "DEL") from exc
        return deleted

    async def scan(self, pattern: str, count: int = 1000) -> AsyncIterator[str]:
        """SCAN every primary for keys matching ``pattern`` (only flush() needs this)."""
        try:
            if self.is_cluster:
                for node in self.client.get_primaries():
                    async for key in self.client.scan_iter(match=pattern, count=count, target_nodes=node):
                        yield as_text(key)
            else:
                async for key in self.client.scan_iter(match=pattern, count=count):
                    yield as_text(key)
        except Exception as exc:
            raise translate_error(exc, "SCAN") from exc


class Subscription:
    """A pub/sub subscription to one channel; ``next_message`` returns its data or None on timeout."""

    def __init__(self, pubsub: Any, owned_client: Any | None) -> None:
        self._pubsub = pubsub
        self._owned_client = owned_client

    async def next_message(self, wait_s: float) -> str | None:
        try:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
        except Exception as exc:
            raise translate_error(exc, "SUBSCRIBE") from exc
        if message is None or message.get("type") != "message":
            return None
        return as_text(message["data"])

    async def aclose(self) -> None:
        try:
            await self._pubsub.aclose()
            if self._owned_client is not None:
                await self._owned_client.aclose()
        except Exception as exc:
            raise translate_error(exc, "UNSUBSCRIBE") from exc


async def subscribe(backend: Backend, channel: str) -> Subscription:
    """Subscribe to ``channel``. valkey-py's asyncio cluster client has no pubsub(); a classic PUBLISH
    reaches every node of a cluster, so there we subscribe on a plain connection to one primary."""
    owned = None
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
    except Exception as exc:
        if owned is not None:
            await owned.aclose()
        raise translate_error(exc, "SUBSCRIBE") from exc
    return Subscription(pubsub, owned)
