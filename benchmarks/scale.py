"""Per-thread and per-tool operations as the database fills with unrelated keys.

Each size gets its own logical database on the same server (database 0 holds the smallest keyspace, 1 the
next, ...), filled with that many unrelated keys (``DEBUG POPULATE``, or a pipelined SET loop where DEBUG is
disabled). Both libraries then run ``get_all``, ``touch``, ``destroy_thread`` and ``invalidate_by_tool`` on
a 5-field thread / a 5-entry tool in every database, round after round, the order of databases and of
libraries rotating every round — so a growth ratio compares figures taken side by side, not minutes
apart on a machine whose load moves. The figure is the median latency per call. A library that SCANs the
keyspace makes fewer calls per round, as many as fit in the per-round budget (at least one).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from valkey.asyncio import Valkey

from benchmarks.operations import gather_limited
from benchmarks.throughput import next_batch
from benchmarks.workload import Subject, Workload

FIELDS = 5
ENTRIES = 5
SCALE_OPERATIONS = ("get_all", "touch", "destroy_thread", "invalidate_by_tool")

MakeSubject = Callable[[str], Subject]
"""Build a library's cache on the given database URL."""


@dataclass
class ScalePoint:
    keys: int
    database: int
    latencies_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # op -> library -> median ms
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    fill: str = ""


async def populate(client: Any, count: int, prefix: str = "unrelated") -> str:
    """Fill the client's (empty) database with ``count`` small unrelated keys; returns how."""
    if count <= 0:
        return "empty"
    try:
        await client.execute_command("DEBUG", "POPULATE", count, prefix, 32)
        method = "DEBUG POPULATE"
    except Exception:
        for start in range(0, count, 10_000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(count, start + 10_000)):
                pipe.set(f"{prefix}:{i}", "x" * 32)
            await pipe.execute()
        method = "pipelined SET"
    size = int(await client.dbsize())
    if size < count:
        raise AssertionError(f"expected at least {count} keys, found {size}")
    return method


@dataclass
class _Target:
    """One library on one database, with the thread, tools and doomed targets its calls use."""

    subject: Subject
    point: ScalePoint
    batch: int
    per_round: int = 1
    used: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    @property
    def thread(self) -> str:
        return f"scale-thread-{self.batch}"

    def call(self, operation: str) -> Awaitable[Any]:
        cache = self.subject.cache
        index = self.used.get(operation, 0)
        self.used[operation] = index + 1
        if operation == "get_all":
            return cache.session.get_all(self.thread)
        if operation == "touch":
            return cache.session.touch(self.thread)
        if operation == "destroy_thread":
            return cache.session.destroy_thread(f"scale-doomed-{self.batch}-{index}")
        return cache.tool.invalidate_by_tool(f"scale_tool_{self.batch}_{index}")


def _expected(operation: str, result: Any) -> bool:
    if operation == "get_all":
        return isinstance(result, dict) and len(result) == FIELDS
    if operation == "touch":
        return result is None or result == FIELDS  # the competitor's touch returns None
    return bool(result == (FIELDS if operation == "destroy_thread" else ENTRIES))


async def _prepare(target: _Target, workload: Workload, calls: int) -> None:
    cache = target.subject.cache
    value = workload.session_value
    await gather_limited([cache.session.set(target.thread, f"field-{f}", value) for f in range(FIELDS)])
    await gather_limited(
        [
            cache.session.set(f"scale-doomed-{target.batch}-{i}", f"field-{f}", value)
            for i in range(calls)
            for f in range(FIELDS)
        ]
    )
    await gather_limited(
        [
            cache.tool.store(
                f"scale_tool_{target.batch}_{i}", {"n": e}, workload.tool_response, target.subject.tool_options()
            )
            for i in range(calls)
            for e in range(ENTRIES)
        ]
    )


async def run_scale(
    url: str,
    sizes: list[int],
    workload: Workload,
    makers: list[MakeSubject],
    *,
    rounds: int,
    calls_per_round: int,
    round_budget_s: float,
    progress: Callable[[str], None] = lambda _: None,
) -> list[ScalePoint]:
    if len(sizes) > 16:
        raise ValueError("at most 16 sizes (one logical database each)")
    admin = Valkey.from_url(url)
    targets: list[_Target] = []
    clients: list[Valkey] = []
    try:
        await admin.flushall()
        points = []
        for database, size in enumerate(sizes):
            client = Valkey.from_url(f"{url}/{database}")
            clients.append(client)
            point = ScalePoint(keys=size, database=database)
            point.fill = await populate(client, size)
            points.append(point)
            progress(f"scale: database {database} holds {size:,} unrelated keys")
        await asyncio.sleep(min(2.0, max(sizes) / 500_000))  # let the server finish growing its tables
        for point in points:
            for make in makers:
                target = _Target(make(f"{url}/{point.database}"), point, next_batch())
                await _prepare(target, workload, 3)
                # How many calls fit in a round: a SCANning library gets fewer, at least one.
                started = time.perf_counter()
                for _ in range(3):
                    await target.call("get_all")
                per_call = (time.perf_counter() - started) / 3
                target.per_round = max(1, min(calls_per_round, int(round_budget_s / max(per_call, 1e-9))))
                target.used.clear()
                await _prepare(target, workload, target.per_round * rounds)
                targets.append(target)
        for round_no in range(rounds):
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                for operation in SCALE_OPERATIONS:
                    for _ in range(target.per_round):
                        t0 = time.perf_counter()
                        result = await target.call(operation)
                        target.latencies.setdefault(operation, []).append(time.perf_counter() - t0)
                        if not _expected(operation, result):
                            raise AssertionError(f"{target.subject.label} {operation}: unexpected result {result!r}")
            progress(f"scale: round {round_no + 1}/{rounds} done")
        for target in targets:
            for operation, latencies in target.latencies.items():
                label = target.subject.label
                target.point.latencies_ms.setdefault(operation, {})[label] = statistics.median(latencies) * 1000
                target.point.calls.setdefault(operation, {})[label] = len(latencies)
        return points
    finally:
        for target in targets:
            await target.subject.close()
        for client in clients:
            await client.aclose()
        await admin.aclose()
