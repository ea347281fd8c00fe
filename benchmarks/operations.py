"""The operations timed side by side, each written once and run identically on both libraries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.workload import Subject, Workload

Call = Callable[[Subject, Workload, int, int], Awaitable[Any]]
"""``(subject, workload, batch, i)``: the i-th call of a batch."""
Prepare = Callable[[Subject, Workload, int, int], Awaitable[None]]
"""``(subject, workload, batch, n)``: untimed setup for the n calls of a destructive batch."""

DESTROY_FIELDS = 3
INVALIDATE_ENTRIES = 3
_SETUP_CONCURRENCY = 32


@dataclass(frozen=True)
class Operation:
    name: str
    call: Call
    expect: Callable[[Any], bool]
    prepare: Prepare | None = None
    hit_path: bool = False
    weight: float = 1.0
    """Fraction of ``--ops`` per batch (destructive operations need their setup repeated per batch)."""


async def gather_limited(coroutines: list[Awaitable[Any]], limit: int = _SETUP_CONCURRENCY) -> None:
    for start in range(0, len(coroutines), limit):
        await asyncio.gather(*coroutines[start : start + limit])


# ── one-time data every batch reads ──────────────────────────────────────────────────────────────


async def seed(subject: Subject, workload: Workload) -> None:
    """Entries the hit paths read (and the threads get_all reads); identical for both libraries."""
    cache = subject.cache
    writes: list[Awaitable[Any]] = []
    for i in range(workload.pool):
        writes.append(cache.llm.store(workload.hit_requests[i], workload.responses[i], subject.llm_options()))
        writes.append(
            cache.tool.store("get_weather", workload.tool_args[i], workload.tool_response, subject.tool_options())
        )
    for i in range(workload.large_pool):
        writes.append(
            cache.llm.store(workload.large_requests[i], workload.responses[i % workload.pool], subject.llm_options())
        )
    for t in range(workload.threads):
        for f in range(workload.fields_per_thread):
            writes.append(cache.session.set(f"thread-{t}", f"field-{f}", workload.session_value))
    await gather_limited(writes)


# ── the calls ─────────────────────────────────────────────────────────────────────────────────────


async def _llm_check_hit(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.llm.check(w.hit_requests[i % w.pool])


async def _llm_check_large_hit(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.llm.check(w.large_requests[i % w.large_pool])


async def _llm_check_miss(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.llm.check(w.miss_requests[i % w.pool])


async def _llm_store(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.llm.store(w.store_requests[i % w.pool], w.responses[i % w.pool], s.llm_options())


async def _tool_check_hit(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.tool.check("get_weather", w.tool_args[i % w.pool])


async def _tool_store(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.tool.store("search_docs", w.tool_args[i % w.pool], w.tool_response, s.tool_options())


async def _session_get_hit(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.session.get(w.thread(i), w.field_name(i // w.threads))


async def _session_set(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.session.set(f"writer-{i % w.threads}", w.field_name(i // w.threads), w.session_value)


async def _get_all(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.session.get_all(w.thread(i))


def _doomed_thread(batch: int, i: int) -> str:
    return f"doomed-{batch}-{i}"


def _doomed_tool(batch: int, i: int) -> str:
    return f"doomed_tool_{batch}_{i}"


async def _prepare_destroy(s: Subject, w: Workload, batch: int, n: int) -> None:
    await gather_limited(
        [
            s.cache.session.set(_doomed_thread(batch, i), f"field-{f}", w.session_value)
            for i in range(n)
            for f in range(DESTROY_FIELDS)
        ]
    )


async def _destroy_thread(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.session.destroy_thread(_doomed_thread(batch, i))


async def _prepare_invalidate(s: Subject, w: Workload, batch: int, n: int) -> None:
    await gather_limited(
        [
            s.cache.tool.store(_doomed_tool(batch, i), {"n": e}, w.tool_response, s.tool_options())
            for i in range(n)
            for e in range(INVALIDATE_ENTRIES)
        ]
    )


async def _invalidate_by_tool(s: Subject, w: Workload, batch: int, i: int) -> Any:
    return await s.cache.tool.invalidate_by_tool(_doomed_tool(batch, i))


def _is_hit(result: Any) -> bool:
    return bool(result.hit)


def _is_miss(result: Any) -> bool:
    return not result.hit


def _is_key(result: Any) -> bool:
    return isinstance(result, str)


def _is_none(result: Any) -> bool:
    return result is None


def _is_str(result: Any) -> bool:
    return isinstance(result, str)


def _has_all_fields(result: Any) -> bool:
    return isinstance(result, dict) and len(result) == Workload.fields_per_thread


OPERATIONS: tuple[Operation, ...] = (
    Operation("llm.check hit", _llm_check_hit, _is_hit, hit_path=True),
    Operation("llm.check hit, 17 KB request", _llm_check_large_hit, _is_hit),
    Operation("llm.check miss", _llm_check_miss, _is_miss),
    Operation("llm.store", _llm_store, _is_key),
    Operation("tool.check hit", _tool_check_hit, _is_hit, hit_path=True),
    Operation("tool.store", _tool_store, _is_key),
    Operation("session.get hit", _session_get_hit, _is_str, hit_path=True),
    Operation("session.set", _session_set, _is_none),
    Operation("get_all", _get_all, _has_all_fields),
    Operation(
        "destroy_thread",
        _destroy_thread,
        lambda deleted: deleted == DESTROY_FIELDS,
        prepare=_prepare_destroy,
        weight=0.25,
    ),
    Operation(
        "invalidate_by_tool",
        _invalidate_by_tool,
        lambda deleted: deleted == INVALIDATE_ENTRIES,
        prepare=_prepare_invalidate,
        weight=0.25,
    ),
)

FLOOR_NAME = "valkey-py GET (floor)"
FLOOR_KEY = "bench:floor"


async def raw_get(client: Any) -> Any:
    return await client.get(FLOOR_KEY)
