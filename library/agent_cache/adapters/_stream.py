"""Stream wrappers shared by the provider adapters: record a live stream, replay a cached one.

A recorded stream hands every provider event to the caller as it arrives and feeds a provider-specific
assembler. Only when the provider's iterator ends *and* the assembler saw the provider's own end-of-response
marker (``finish_reason``, ``response.completed``, ``message_stop``) is the answer stored. An exception, a
dropped connection, ``break`` or ``aclose()`` by the consumer, or a cancelled task never reach that point, so a
partial answer is never cached.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from ._caching import Answer, UncacheableResponseError, answer_of

log = logging.getLogger("agent_cache.adapters")

E = TypeVar("E")
R = TypeVar("R")
E_contra = TypeVar("E_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class IncompleteStreamError(UncacheableResponseError):
    """The stream ended without the provider's end-of-response marker."""


class Assembler(Protocol[E_contra, R_co]):
    def feed(self, event: E_contra) -> None: ...

    def response(self) -> R_co:
        """The assembled provider response; raises :class:`IncompleteStreamError` before the end marker."""
        ...

    def answer(self) -> Answer:
        """What to store; raises :class:`UncacheableResponseError` (or :class:`IncompleteStreamError`)."""
        ...


async def _close(source: object) -> None:
    for name in ("aclose", "close"):
        method = getattr(source, name, None)
        if method is not None:
            result = method()
            if isinstance(result, Awaitable):
                await result
            return


class CachedStream(Generic[E, R]):
    """What a cached streaming call returns: an async iterator of the provider's events, live or replayed.

    ``cached`` tells which; ``close()``/``aclose()`` or ``async with`` end it early; ``final_response()`` reads the
    rest and returns the provider's response type.
    """

    cached: bool
    _closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> E:
        raise NotImplementedError

    async def close(self) -> None:
        self._closed = True

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def final_response(self) -> R:
        raise NotImplementedError

    async def _drain(self) -> None:
        async for _ in self:
            pass


class RecordingStream(CachedStream[E, R]):
    """A live provider stream (a cache miss): events pass through; a completed answer is stored at the end."""

    cached = False

    def __init__(
        self,
        source: AsyncIterator[E],
        assembler: Assembler[E, R],
        on_complete: Callable[[Answer], Awaitable[object]],
    ) -> None:
        self._source = source
        self._assembler = assembler
        self._on_complete = on_complete
        self._ended = False
        self._recording = True

    async def __anext__(self) -> E:
        if self._closed or self._ended:
            raise StopAsyncIteration
        try:
            event = await self._source.__anext__()
        except StopAsyncIteration:
            self._ended = True
            await self._store()
            raise
        if self._recording:
            try:
                self._assembler.feed(event)
            except Exception:  # the caller's stream must never break because the cache could not follow it
                self._recording = False
                log.warning("agent-cache: could not follow the stream; it will not be stored", exc_info=True)
        return event

    async def _store(self) -> None:
        if self._recording and (answer := answer_of(lambda _: self._assembler.answer(), None)) is not None:
            await self._on_complete(answer)

    async def close(self) -> None:
        """Stop early: the provider connection is closed and nothing is stored."""
        if not self._closed:
            self._closed = True
            if not self._ended:
                await _close(self._source)

    async def final_response(self) -> R:
        """Read the rest of the stream and return the provider's response type, assembled."""
        await self._drain()
        return self._assembler.response()


class ReplayStream(CachedStream[E, R]):
    """A cache hit as a stream of the provider's own event types; the provider is not called."""

    cached = True

    def __init__(self, events: Sequence[E], response: R) -> None:
        self._events = list(events)
        self._response = response
        self._position = 0

    async def __anext__(self) -> E:
        if self._closed or self._position >= len(self._events):
            raise StopAsyncIteration
        event = self._events[self._position]
        self._position += 1
        return event

    async def final_response(self) -> R:
        await self._drain()
        return self._response
