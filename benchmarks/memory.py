"""Valkey memory per cached LLM entry, and what deriving a key costs.

Memory: an empty database, one library, ``n`` LLM entries of a typical size (a ~3 KB request, a 2 KB
response, token counts, a TTL); ``INFO memory`` ``used_memory`` before and after, divided by ``n``. That
includes everything the library writes per entry (our per-model index member, the expiry). ``MEMORY
USAGE`` of one entry is reported alongside.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.operations import gather_limited
from benchmarks.workload import Subject, Workload, large_request, llm_request


@dataclass
class MemoryFigure:
    label: str
    entries: int
    bytes_per_entry: float
    entry_key_bytes: int
    stored_value_bytes: int


async def used_memory(admin: Any) -> int:
    info = await admin.info("memory")
    return int(info["used_memory"])


async def measure_memory(
    make: Callable[[], Subject], label: str, admin: Any, workload: Workload, entries: int
) -> MemoryFigure:
    await admin.flushall()
    subject = make()
    try:
        await asyncio.sleep(0.2)  # let start-up writes (discovery, config) land before the baseline
        # Open the pool's connections first: a new connection's buffers would count as entry memory.
        await gather_limited([subject.cache.llm.check(workload.hit_requests[0]) for _ in range(64)])
        await asyncio.sleep(0.1)
        before = await used_memory(admin)
        requests = [llm_request(i, target_bytes=workload.request_bytes, variant="memory") for i in range(entries)]
        await gather_limited(
            [
                subject.cache.llm.store(requests[i], workload.responses[i % workload.pool], subject.llm_options())
                for i in range(entries)
            ]
        )
        after = await used_memory(admin)
        key = await subject.cache.llm.store(requests[0], workload.responses[0], subject.llm_options())
        usage = await admin.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        value_bytes = await admin.strlen(key)
    finally:
        await subject.close()
    return MemoryFigure(label, entries, (after - before) / entries, int(usage or 0), int(value_bytes))


@dataclass
class KeyDerivation:
    request_bytes: int
    ours_us: float
    ours_stdlib_us: float
    """Ours without orjson (the stdlib json encoder only)."""
    theirs_us: float
    naive_us: float


def _naive_llm_hash(params: dict[str, Any]) -> str:
    """The straightforward way: a sorted deep copy, then json.dumps, then SHA-256 (the issue's ~110 µs)."""

    def _sorted(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _sorted(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            return [_sorted(v) for v in value]
        return value

    text = json.dumps(_sorted(params), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def measure_key_derivation(repeat: int = 2000) -> KeyDerivation:
    from agent_cache import _keys
    from agent_cache._keys import llm_hash
    from benchmarks import competitor

    competitor.load()
    from betterdb_agent_cache.utils import llm_cache_hash

    request = large_request()
    size = len(json.dumps(request, separators=(",", ":")))

    def best(fn: Callable[[], object]) -> float:
        return min(timeit.repeat(fn, number=max(1, repeat // 5), repeat=5)) / max(1, repeat // 5) * 1e6

    ours = best(lambda: llm_hash(request))
    ours_stdlib = ours
    if getattr(_keys, "_orjson_dumps", None) is not None:  # measure the stdlib-only route too
        accelerator = _keys._orjson_dumps
        _keys._orjson_dumps = None
        try:
            ours_stdlib = best(lambda: llm_hash(request))
        finally:
            _keys._orjson_dumps = accelerator
    return KeyDerivation(
        request_bytes=size,
        ours_us=ours,
        ours_stdlib_us=ours_stdlib,
        theirs_us=best(lambda: llm_cache_hash(request)),
        naive_us=best(lambda: _naive_llm_hash(request)),
    )
