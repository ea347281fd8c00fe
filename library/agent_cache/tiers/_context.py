"""What every tier shares: the backend, the key layout, counters, telemetry and TTL sources."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .._backend import Backend
from .._errors import BackendError, BackendTimeoutError, BackendUnavailableError, CorruptEntryError
from .._keys import KeyLayout
from .._ttl import TtlPolicy
from ..stats import StatsBuffer
from ..telemetry import Telemetry


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, BackendTimeoutError):
        return "timeout"
    if isinstance(exc, BackendUnavailableError):
        return "unavailable"
    if isinstance(exc, CorruptEntryError):
        return "corrupt"
    if isinstance(exc, BackendError):
        return "command"
    return "usage"


@dataclass
class TierContext:
    backend: Backend
    keys: KeyLayout
    stats: StatsBuffer
    telemetry: Telemetry
    ttl: TtlPolicy

    @contextmanager
    def measured(self, tier: str, operation: str) -> Iterator[None]:
        """Time an operation into the duration histogram and count its failures by kind."""
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.telemetry.error(tier, operation, error_kind(exc))
            raise
        finally:
            self.telemetry.duration(tier, operation, time.perf_counter() - start)
