"""A bound on the distinct names that become metric labels and stats-hash fields.

Tool names come from an LLM's tool calls, model names from a request's ``model`` field and tenants from users:
none of them is a closed set, and every distinct value is a Prometheus series (and, for tools and tenants, stats
fields) for good. A limiter keeps the first ``limit`` distinct values it sees and reports every later one as
``other``, so one cache instance never exports more than ``limit + 1`` values of a kind.

What holds, and what does not: each cache instance has its own limiter per kind (tenants, tools, models), and a
name it admitted stays admitted for its life. Processes decide alone (asking Valkey on a hit would cost a round
trip), so two processes may admit different names: a name can be counted under its own name by one process and as
``other`` by another, and the shared stats hash holds at most ``limit`` names per process that writes to it, plus
``other``. A real name ``other`` shares its series and fields with the overflow.
"""

from __future__ import annotations

import threading

from ._errors import ConfigurationError

OTHER = "other"
"""What a name beyond the limit is counted as."""

DEFAULT_MAX_NAMES = 100
"""Distinct tenants, tool names and model names (each kind apart) one cache instance counts under their own name."""


def validate_max_names(limit: object, what: str = "max_names") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigurationError(f"{what} must be a whole number of names, 0 or more, got {limit!r}")
    return limit


class CardinalityLimiter:
    """The first ``limit`` distinct values pass unchanged; every later new value becomes :data:`OTHER`.

    A value seen before costs one set lookup; only a new value takes the lock (the sync facade runs the cache on
    its own thread, so two threads may offer new names at once).
    """

    __slots__ = ("_admitted", "_lock", "limit")

    def __init__(self, limit: int = DEFAULT_MAX_NAMES) -> None:
        self.limit = validate_max_names(limit)
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, value: str) -> str:
        """``value`` itself if it is (or can still be) one of the kept values, else ``"other"``."""
        if value in self._admitted:
            return value
        with self._lock:
            if value in self._admitted or len(self._admitted) < self.limit:
                self._admitted.add(value)
                return value
        return OTHER

    @property
    def admitted(self) -> frozenset[str]:
        """The values kept so far (at most ``limit``)."""
        return frozenset(self._admitted)
