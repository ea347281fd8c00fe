"""Per-thread and per-tool operations as the database fills with unrelated keys.

For each size the database is emptied and filled with that many unrelated keys (``DEBUG POPULATE``, or a
pipelined SET loop where DEBUG is disabled), then each library runs ``get_all``, ``touch``,
``destroy_thread`` and ``invalidate_by_tool`` on a 5-field thread / a 5-entry tool. The figure is the median
latency per call; a library that SCANs the keyspace gets a time budget per operation (at least 3 calls).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.operations import gather_limited
from benchmarks.throughput import next_batch
from benchmarks.workload import Subject, Workload

FIELDS = 5
ENTRIES = 5
SCALE_OPERATIONS = ("get_all", "touch", "destroy_thread", "invalidate_by_tool")


@dataclass
class ScalePoint:
    keys: int
    latencies_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # op -> library -> median ms
    calls: dict[str, dict[str, int]] = field(default_factory=dict)


async def populate(admin: Any, count: int, prefix: str = "unrelated") -> str:
    """Fill the database with ``count`` small unrelated keys; returns how."""
    await admin.flushall()
    if count <= 0:
        return "empty"
    try:
        await admin.execute_command("DEBUG", "POPULATE", count, prefix, 32)
        method = "DEBUG POPULATE"
    except Exception:
        for start in range(0, count, 10_000):
            pipe = admin.pipeline(transaction=False)
            for i in range(start, min(count, start + 10_000)):
                pipe.set(f"{prefix}:{i}", "x" * 32)
            await pipe.execute()
        method = "pipelined SET"
    size = int(await admin.dbsize())
    if size < count:
        raise AssertionError(f"expected at least {count} keys, found {size}")
    await asyncio.sleep(min(2.0, count / 500_000))  # let the server finish growing its keyspace table
    return method


async def _time_calls(
    call: Callable[[int], Awaitable[Any]], expect: Callable[[Any], bool], max_calls: int, budget_s: float
) -> list[float]:
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(max_calls):
        t0 = time.perf_counter()
        result = await call(i)
        latencies.append(time.perf_counter() - t0)
        if not expect(result):
            raise AssertionError(f"unexpected result {result!r}")
        if len(latencies) >= 3 and time.perf_counter() - started > budget_s:
            break
    return latencies


async def run_point(
    subject: Subject, workload: Workload, point: ScalePoint, *, max_calls: int, budget_s: float
) -> None:
    cache = subject.cache
    value = workload.session_value
    batch = next_batch()
    thread = f"scale-thread-{batch}"
    await gather_limited([cache.session.set(thread, f"field-{f}", value) for f in range(FIELDS)])

    async def get_all(i: int) -> Any:
        return await cache.session.get_all(thread)

    async def touch(i: int) -> Any:
        return await cache.session.touch(thread)

    async def destroy(i: int) -> Any:
        return await cache.session.destroy_thread(f"scale-doomed-{batch}-{i}")

    async def invalidate(i: int) -> Any:
        return await cache.tool.invalidate_by_tool(f"scale_tool_{batch}_{i}")

    calls_for_destructive = max_calls
    # Destructive calls need their targets first; a SCANning library gets only as many as its budget allows,
    # so estimate that from get_all before setting up.
    probe = await _time_calls(get_all, lambda r: len(r) == FIELDS, 3, 0.0)
    per_call = statistics.median(probe)
    if per_call > 0:
        calls_for_destructive = max(3, min(max_calls, int(budget_s / per_call)))
    await gather_limited(
        [
            cache.session.set(f"scale-doomed-{batch}-{i}", f"field-{f}", value)
            for i in range(calls_for_destructive)
            for f in range(FIELDS)
        ]
    )
    await gather_limited(
        [
            cache.tool.store(f"scale_tool_{batch}_{i}", {"n": e}, workload.tool_response, subject.tool_options())
            for i in range(calls_for_destructive)
            for e in range(ENTRIES)
        ]
    )
    plans: dict[str, tuple[Callable[[int], Awaitable[Any]], Callable[[Any], bool], int]] = {
        "get_all": (get_all, lambda r: len(r) == FIELDS, max_calls),
        # The competitor's touch returns None; ours returns the count.
        "touch": (touch, lambda r: r is None or r == FIELDS, max_calls),
        "destroy_thread": (destroy, lambda r: r == FIELDS, calls_for_destructive),
        "invalidate_by_tool": (invalidate, lambda r: r == ENTRIES, calls_for_destructive),
    }
    for name, (call, expect, limit) in plans.items():
        latencies = await _time_calls(call, expect, limit, budget_s)
        point.latencies_ms.setdefault(name, {})[subject.label] = statistics.median(latencies) * 1000
        point.calls.setdefault(name, {})[subject.label] = len(latencies)
