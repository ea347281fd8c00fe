"""Throughput side by side: alternating A/B rounds, sequential (one task) and concurrent (N tasks).

Every round times each operation once per library, the order flipping every round (A/B, B/A, ...); a
library's figure is the median of its rounds. The raw valkey-py GET (the floor) is timed at the start of
every round and, for each hit path, right next to it (floor, A, B / B, A, floor), so a hit path's
fraction of the floor compares batches taken seconds apart, not a minute. Valkey's INFO
commandstats is read around every timed batch, so "commands per operation" is what the server executed
(including commands run inside Lua scripts and, amortised, each library's own background work).
Round trips per operation are counted separately, on clients that count what they send.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from valkey.asyncio import Connection

from benchmarks.operations import OPERATIONS, Operation, raw_get
from benchmarks.workload import Subject, Workload

_batches = iter(range(1, 1 << 62))


def next_batch() -> int:
    """A number no other batch of this run has: destructive operations name their targets with it."""
    return next(_batches)


async def command_counts(client: Any) -> Counter[str]:
    info = await client.info("commandstats")
    return Counter(
        {
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in info.items()
            if name.startswith("cmdstat_")
        }
    )


def commands_delta(before: Counter[str], after: Counter[str]) -> Counter[str]:
    delta = after - before
    delta.pop("info", None)
    return delta


async def timed(call: Callable[[int], Awaitable[Any]], n: int, concurrency: int) -> float:
    """Seconds to run ``call(0..n-1)``, one at a time or from ``concurrency`` tasks pulling the next index."""
    gc.collect()
    if concurrency <= 1:
        start = time.perf_counter()
        for i in range(n):
            await call(i)
        return time.perf_counter() - start
    indexes = iter(range(n))

    async def worker() -> None:
        for i in indexes:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


@dataclass
class Series:
    """One (operation, library) across rounds."""

    rates: list[float] = field(default_factory=list)
    ops: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    round_trips_per_op: float | None = None

    @property
    def ops_per_s(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def commands_per_op(self) -> float:
        return sum(self.commands.values()) / self.ops if self.ops else 0.0

    def command_mix(self, limit: int = 6) -> str:
        if not self.ops:
            return ""
        parts = [
            f"{name} {calls / self.ops:.2g}"
            for name, calls in self.commands.most_common(limit)
            if calls / self.ops >= 0.01
        ]
        return ", ".join(parts)


@dataclass
class ModeResult:
    mode: str
    concurrency: int
    ops: dict[str, dict[str, Series]] = field(default_factory=dict)
    floor: Series = field(default_factory=Series)
    floors: dict[str, Series] = field(default_factory=dict)
    """The floor timed next to each hit path."""


async def _measure(series: Series, admin: Any, call: Callable[[int], Awaitable[Any]], n: int, concurrency: int) -> None:
    before = await command_counts(admin)
    seconds = await timed(call, n, concurrency)
    after = await command_counts(admin)
    series.rates.append(n / seconds)
    series.ops += n
    series.commands.update(commands_delta(before, after))


def _bound(subject: Subject, workload: Workload, operation: Operation, batch: int) -> Callable[[int], Awaitable[Any]]:
    def call(i: int) -> Awaitable[Any]:
        return operation.call(subject, workload, batch, i)

    return call


async def warm_up(
    subjects: Iterable[Subject], workload: Workload, floor_client: Any, operations: Iterable[Operation], n: int
) -> None:
    """Run everything once untimed (scripts load, pools fill, label children appear) and check results."""
    for operation in operations:
        for subject in subjects:
            batch = next_batch()
            if operation.prepare is not None:
                await operation.prepare(subject, workload, batch, n)
            for i in range(n):
                result = await operation.call(subject, workload, batch, i)
                if not operation.expect(result):
                    raise AssertionError(f"{subject.label} {operation.name}: unexpected result {result!r}")
    for _ in range(n):
        if await raw_get(floor_client) is None:
            raise AssertionError("the floor key is missing")


async def run_mode(
    mode: str,
    subjects: list[Subject],
    workload: Workload,
    admin: Any,
    floor_client: Any,
    *,
    ops: int,
    rounds: int,
    concurrency: int,
    operations: tuple[Operation, ...] = OPERATIONS,
    progress: Callable[[str], None] = lambda _: None,
) -> ModeResult:
    result = ModeResult(mode, concurrency)
    for operation in operations:
        result.ops[operation.name] = {subject.label: Series() for subject in subjects}

    async def floor_call(i: int) -> Any:
        return await raw_get(floor_client)

    for round_no in range(rounds):
        order = subjects if round_no % 2 == 0 else list(reversed(subjects))
        await _measure(result.floor, admin, floor_call, ops, concurrency)
        for operation in operations:
            n = max(1, int(ops * operation.weight))
            if operation.hit_path and round_no % 2 == 0:
                await _measure(result.floors.setdefault(operation.name, Series()), admin, floor_call, n, concurrency)
            for subject in order:
                batch = next_batch()
                if operation.prepare is not None:
                    await operation.prepare(subject, workload, batch, n)
                call = _bound(subject, workload, operation, batch)
                await _measure(result.ops[operation.name][subject.label], admin, call, n, concurrency)
                if operation.prepare is None:  # still measuring what we think (a hit is still a hit)?
                    outcome = await call(0)
                    if not operation.expect(outcome):
                        raise AssertionError(f"{subject.label} {operation.name}: unexpected result {outcome!r}")
            if operation.hit_path and round_no % 2 == 1:
                await _measure(result.floors.setdefault(operation.name, Series()), admin, floor_call, n, concurrency)
        progress(f"{mode}: round {round_no + 1}/{rounds} done")
    return result


# ── round trips, counted on the client ───────────────────────────────────────────────────────────

_counting: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("bench_counting", default=None)


class CountingConnection(Connection):
    """Counts sends made from a task that set ``_counting`` (not handshakes, not other tasks' sends)."""

    _connecting = False

    async def connect(self) -> None:
        self._connecting = True
        try:
            await super().connect()  # type: ignore[no-untyped-call]
        finally:
            self._connecting = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        await super().send_packed_command(command, check_health)
        sink = _counting.get()
        if sink is not None and not self._connecting:
            sink[0] += 1


async def count_round_trips(
    subject: Subject, workload: Workload, operations: Iterable[Operation], n: int = 20
) -> dict[str, float]:
    """Round trips per operation for a subject built on a ``CountingConnection`` pool."""
    counts: dict[str, float] = {}
    for operation in operations:
        batch = next_batch()
        if operation.prepare is not None:
            await operation.prepare(subject, workload, batch, n)
        sink = [0]
        token = _counting.set(sink)
        try:
            for i in range(n):
                await operation.call(subject, workload, batch, i)
        finally:
            _counting.reset(token)
        counts[operation.name] = sink[0] / n
    return counts
