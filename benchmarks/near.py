"""Near-cache rows: an L1 hit next to a raw valkey-py GET of the same value, our Valkey hit and the reference's.

For 1 task and for N tasks, every round times, in alternating order: ``llm.check`` and ``tool.check`` hits on
our cache with the near-cache on (L1 answers after a warm read), a raw valkey-py ``GET`` of the very entries
those checks return, the same checks on our cache without it and on the reference; and ``llm.check`` misses
with and without the near-cache (the miss path then reads through a tracked connection). Medians of rounds.
Memory: what L1 holds once every entry of the workload is in it, against ``max_bytes``, with a budget that
forces evictions.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.operations import seed
from benchmarks.throughput import timed
from benchmarks.workload import Subject, Workload, make_ours, make_theirs

NEAR_NAME = "bench_near"
SMALL_BUDGET = 256 * 1024
"""max_bytes for the memory check: far below the workload's entries, so L1 must evict to stay within it."""

Call = Callable[[int], Awaitable[Any]]


def _checks(subject: Subject, workload: Workload) -> dict[str, Call]:
    cache, pool = subject.cache, workload.pool
    return {
        "llm.check hit": lambda i: cache.llm.check(workload.hit_requests[i % pool]),
        "tool.check hit": lambda i: cache.tool.check("get_weather", workload.tool_args[i % pool]),
        "llm.check miss": lambda i: cache.llm.check(workload.miss_requests[i % pool]),
    }


async def _fill_l1(near: Subject, workload: Workload) -> None:
    """Read every entry until L1 answers (the first read of a node arms tracking in the background)."""
    checks = _checks(near, workload)
    for _ in range(3):
        for i in range(workload.pool):
            await checks["llm.check hit"](i)
            await checks["tool.check hit"](i)
        await asyncio.sleep(0.2)


def _gauge(subject: Subject, metric: str) -> float:
    registry = subject.cache.options.telemetry.registry
    return float(registry.get_sample_value(f"agent_cache_{metric}", {"cache_name": subject.cache.name}) or 0)


async def run_near(
    url: str,
    workload: Workload,
    *,
    ops: int,
    rounds: int,
    concurrency: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    near = make_ours(url, NEAR_NAME, near_cache={})
    plain = make_ours(url, NEAR_NAME)  # the same entries, read from Valkey every time
    theirs = make_theirs(url, "bench_near_theirs")
    subjects = [near, plain, theirs]
    results: dict[str, Any] = {}
    try:
        progress("near-cache: seeding")
        await seed(plain, workload)
        await seed(theirs, workload)
        await _fill_l1(near, workload)
        llm_keys = [(await plain.cache.llm.check(request)).key for request in workload.hit_requests]
        tool_keys = [(await plain.cache.tool.check("get_weather", args)).key for args in workload.tool_args]
        raw = plain.client
        floors: dict[str, Call] = {
            "llm.check hit": lambda i: raw.get(llm_keys[i % workload.pool]),
            "tool.check hit": lambda i: raw.get(tool_keys[i % workload.pool]),
        }
        for mode, tasks in (("sequential", 1), ("concurrent", concurrency)):
            progress(f"near-cache: {mode}")
            rates: dict[str, dict[str, list[float]]] = {}
            for round_index in range(rounds):
                for name in ("llm.check hit", "tool.check hit", "llm.check miss"):
                    contenders: list[tuple[str, Call]] = [
                        ("near", _checks(near, workload)[name]),
                        ("ours", _checks(plain, workload)[name]),
                    ]
                    if name in floors:
                        contenders += [("get", floors[name]), ("theirs", _checks(theirs, workload)[name])]
                    if round_index % 2:
                        contenders.reverse()
                    for label, call in contenders:
                        seconds = await timed(call, ops, tasks)
                        rates.setdefault(name, {}).setdefault(label, []).append(ops / seconds)
            results[mode] = {
                "concurrency": tasks,
                "ops": {
                    name: {label: statistics.median(values) for label, values in by_label.items()}
                    for name, by_label in rates.items()
                },
            }
        results["memory"] = {
            "entries": _gauge(near, "near_cache_entries"),
            "bytes": _gauge(near, "near_cache_bytes"),
            "max_bytes": near.cache.options.near_cache.max_bytes,
        }
    finally:
        for subject in subjects:
            await subject.close()
    progress("near-cache: memory bound")
    small = make_ours(url, NEAR_NAME, near_cache={"max_bytes": SMALL_BUDGET})
    try:
        await _fill_l1(small, workload)
        results["memory_bounded"] = {
            "entries": _gauge(small, "near_cache_entries"),
            "bytes": _gauge(small, "near_cache_bytes"),
            "max_bytes": SMALL_BUDGET,
            "evictions": _gauge(small, "near_cache_evictions_total"),
        }
    finally:
        await small.close()
    return results
