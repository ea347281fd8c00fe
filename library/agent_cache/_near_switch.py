"""Turning the near-cache on, off or resizing it while the process runs: the application's ``near_cache`` option
is the default, a live config's ``nearCache`` (the operator's ``spec.nearCache``) overrides it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._codec import decode_entry
from ._near_cache import NearCache
from .config import NearCacheSetting
from .types import NearCacheOptions

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional (agent-cache[fast])
    orjson = None  # type: ignore[assignment]


def l1_entry(raw: bytes) -> tuple[dict[str, Any], int]:
    """An LLM/tool entry as the near-cache keeps it: decoded once, sized as its uncompressed JSON."""
    entry = decode_entry(raw)
    if orjson is not None:
        return entry, len(orjson.dumps(entry))
    return entry, len(json.dumps(entry, separators=(",", ":")).encode())


def effective_options(code: NearCacheOptions | None, live: NearCacheSetting | None) -> NearCacheOptions | None:
    """What the near-cache should be now (None: off). Pure: the platform's setting wins, field by field."""
    if live is None:
        return code
    if not live.enabled:
        return None
    base = code if code is not None else NearCacheOptions()
    return NearCacheOptions(
        max_entries=live.max_entries or base.max_entries,
        max_bytes=live.max_bytes or base.max_bytes,
        max_ttl_s=base.max_ttl_s,
    )


class NearCacheSwitch:
    """Holds the current :class:`NearCache` (or None) and swaps it as the live config says.

    ``install`` hands the tiers the one to use; a near-cache switched off is closed after the tiers stopped
    using it, so no read can fill an L1 that nobody invalidates any more.
    """

    def __init__(
        self,
        code: NearCacheOptions | None,
        make: Callable[[NearCacheOptions], NearCache],
        install: Callable[[NearCache | None], None],
    ) -> None:
        self._code = code
        self._make = make
        self._install = install
        self.current: NearCache | None = None
        self._switch(code)

    def _switch(self, wanted: NearCacheOptions | None) -> NearCache | None:
        """Install what ``wanted`` says; returns the near-cache that was replaced (for the caller to close)."""
        old = self.current
        if wanted is None:
            self.current = None
        elif old is None:
            self.current = self._make(wanted)
        else:
            old.max_ttl_s = wanted.max_ttl_s
            old.resize(wanted.max_entries, wanted.max_bytes)
            return None
        self._install(self.current)
        return old

    async def apply(self, live: NearCacheSetting | None) -> None:
        old = self._switch(effective_options(self._code, live))
        if old is not None:
            await old.close()

    async def close(self) -> None:
        if self.current is not None:
            await self.current.close()
