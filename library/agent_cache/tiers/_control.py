"""Per-request cache control: skip the lookup, skip the store, recompute, or never compute on a miss.

A control is given per call (``cache.llm.check(params, control=CacheControl(no_cache=True))``) or as a scope,
``with cache.control(refresh=True):`` / ``async with``. The scope lives in a context variable, so it follows the
tasks started inside the block and reaches adapters and frameworks (LangChain, the SDK wrappers...) without
changing their call sites. A call's own control adds to its scope's: the flags are OR-ed, and a combination that
contradicts itself is an error (``only_if_cached`` with ``no_cache`` or ``refresh``; ``refresh`` with
``no_store``). Pure: the tiers apply it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, fields
from types import TracebackType

from .._errors import AgentCacheUsageError

CONTROL_NAMES = ("no_cache", "no_store", "refresh", "only_if_cached")


@dataclass(frozen=True)
class CacheControl:
    """What one request (or every request in a ``cache.control(...)`` block) asks of the LLM and tool tiers."""

    no_cache: bool = False
    """Skip the lookup (a miss, counted as a bypass, not as a miss); the computed answer is still stored."""
    no_store: bool = False
    """Look up as usual; never store (``store`` does nothing, ``get_or_compute`` computes and returns)."""
    refresh: bool = False
    """Skip the lookup, recompute and overwrite the entry (concurrent refreshes of one key compute once)."""
    only_if_cached: bool = False
    """A miss never calls the model or tool: ``get_or_compute`` returns the miss (``response=None``) and the
    wrappers and framework adapters raise :class:`~agent_cache.CacheMissError`."""

    def __post_init__(self) -> None:
        for name in CONTROL_NAMES:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise AgentCacheUsageError(f"CacheControl.{name} must be True or False, got {value!r}")
        if self.only_if_cached and (self.no_cache or self.refresh):
            raise AgentCacheUsageError(
                "CacheControl: only_if_cached cannot be combined with no_cache or refresh "
                f"(it would never answer): {self.describe()}"
            )
        if self.refresh and self.no_store:
            raise AgentCacheUsageError(
                f"CacheControl: refresh overwrites the entry, so it cannot be combined with no_store: {self.describe()}"
            )

    @property
    def active(self) -> bool:
        """Does it change anything? (``CacheControl()`` does not: calls run as without a control.)"""
        return self.no_cache or self.no_store or self.refresh or self.only_if_cached

    @property
    def skips_lookup(self) -> bool:
        return self.no_cache or self.refresh

    @property
    def lookup_bypass(self) -> str:
        """The bypass reason counted for a skipped lookup."""
        return "refresh" if self.refresh else "no_cache"

    def describe(self) -> str:
        return ", ".join(f"{name}=True" for name in CONTROL_NAMES if getattr(self, name)) or "(none)"

    def merged(self, other: CacheControl) -> CacheControl:
        """Both controls' flags (OR-ed); raises when together they contradict each other."""
        return CacheControl(**{f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)})


def control_from(flags: Mapping[str, object]) -> CacheControl:
    """A :class:`CacheControl` from keyword flags; unknown names are a ``TypeError`` naming all of them."""
    unknown = sorted(str(name) for name in flags if name not in CONTROL_NAMES)
    if unknown:
        raise TypeError(f"unknown cache control(s) {unknown}; valid: {list(CONTROL_NAMES)}")
    return CacheControl(**flags)  # type: ignore[arg-type]


def effective(scope: CacheControl | None, call: CacheControl | None) -> CacheControl | None:
    """The control a call runs under: its scope's, its own, or both merged (None: none that changes anything)."""
    if call is None:
        return scope
    if not isinstance(call, CacheControl):
        raise TypeError(f"control must be a CacheControl, got {type(call).__name__}")
    combined = call if scope is None else scope.merged(call)
    return combined if combined.active else None


class ControlScope:
    """``with`` / ``async with`` block that applies a control to every call made in it (and the tasks it starts).

    Entering merges it with the enclosing scope (a contradiction raises there); leaving restores the enclosing one.
    One object may be entered again after it was left, and nested in itself.
    """

    __slots__ = ("_control", "_tokens", "_var")

    def __init__(self, var: ContextVar[CacheControl | None], control: CacheControl) -> None:
        self._var = var
        self._control = control
        self._tokens: list[Token[CacheControl | None]] = []

    @property
    def control(self) -> CacheControl:
        return self._control

    def __enter__(self) -> CacheControl:
        combined = effective(self._var.get(), self._control)
        self._tokens.append(self._var.set(combined))
        return combined or CacheControl()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._var.reset(self._tokens.pop())

    async def __aenter__(self) -> CacheControl:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)
