"""``python -m benchmarks``: agent-cache vs betterdb-agent-cache on one embedded Valkey, in one run.

Phases: key derivation (CPU only), throughput (sequential, then concurrent; alternating A/B rounds after
warm-up, with a raw valkey-py GET as the floor), round trips per operation, per-thread/per-tool operations
at growing keyspace sizes, and memory per cached LLM entry. Prints a Markdown report (``--markdown`` also
writes it to a file) and, with ``--json``, the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import competitor

_DEFAULT_SCALE = "1000,100000,1000000"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="calls per timed batch (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating A/B rounds per mode (default 5)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per operation first (default 200)")
    parser.add_argument("--concurrency", type=int, default=64, help="tasks in the concurrent mode (default 64)")
    parser.add_argument("--pool", type=int, default=256, help="distinct requests/tool args/etc. (default 256)")
    parser.add_argument(
        "--request-bytes", type=int, default=3000, help="size of the typical LLM request's JSON (default 3000)"
    )
    parser.add_argument(
        "--scale", default=_DEFAULT_SCALE, help=f"unrelated keys for the scale runs, comma-separated ({_DEFAULT_SCALE})"
    )
    parser.add_argument("--scale-rounds", type=int, default=3, help="rounds over every size and library (default 3)")
    parser.add_argument("--scale-calls", type=int, default=50, help="calls per operation per round (default 50)")
    parser.add_argument(
        "--scale-budget",
        type=float,
        default=1.0,
        help="seconds per operation per round; a slower library makes fewer calls, at least one (default 1.0)",
    )
    parser.add_argument("--memory-entries", type=int, default=5000, help="LLM entries for the memory figure")
    parser.add_argument("--key-repeat", type=int, default=2000, help="repetitions for the key-derivation timing")
    parser.add_argument("--competitor", default=competitor.PACKAGE, help="pip requirement to install if missing")
    parser.add_argument("--no-install", action="store_true", help="fail instead of pip-installing the competitor")
    parser.add_argument("--only", default="", help="run only these throughput operations (comma-separated names)")
    parser.add_argument("--skip", default="", help="phases to skip: throughput,concurrent,scale,memory,keys,near")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown report here too")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks" + ("" if not (argv or sys.argv[1:]) else " " + shlex.join(argv or sys.argv[1:]))
    version = competitor.ensure_installed(args.competitor, install=not args.no_install)
    results = asyncio.run(_run(args, command, version))
    from benchmarks.report import render

    text = render(results)
    print(text, end="")
    if args.markdown is not None:
        args.markdown.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


async def _run(args: argparse.Namespace, command: str, competitor_version: str) -> dict[str, Any]:
    from valkey.asyncio import Valkey

    from agent_cache.embedded import EmbeddedValkey
    from benchmarks import memory, scale, throughput
    from benchmarks.operations import FLOOR_KEY, OPERATIONS, seed
    from benchmarks.report import OURS, UNCOMPRESSED, machine
    from benchmarks.workload import Workload, make_ours, make_theirs

    skip = {part.strip() for part in args.skip.split(",") if part.strip()}

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {"command": command, "settings": vars(args) | {"json": None, "markdown": None}}
    if "keys" not in skip:
        progress("key derivation")
        results["key_derivation"] = asdict(memory.measure_key_derivation(args.key_repeat))

    workload = Workload(pool=args.pool, request_bytes=args.request_bytes)
    results["workload"] = {
        "request_bytes": len(json.dumps(workload.hit_requests[0], separators=(",", ":"))),
        "large_request_bytes": len(json.dumps(workload.large_requests[0], separators=(",", ":"))),
        "response_bytes": len(workload.responses[0]),
    }
    with EmbeddedValkey(args=["--enable-debug-command", "yes"]) as server:
        admin = Valkey.from_url(server.url)
        floor_client = Valkey.from_url(server.url)
        try:
            results["machine"] = await machine(admin, competitor_version)
            await admin.flushall()
            ours = make_ours(server.url, "bench_ours")
            theirs = make_theirs(server.url, "bench_theirs")
            subjects = [ours, theirs]
            try:
                progress("seeding and warming up")
                for subject in subjects:
                    await seed(subject, workload)
                await floor_client.set(FLOOR_KEY, workload.responses[0] + " " * 150)
                operations = _selected(OPERATIONS, args.only)
                await throughput.warm_up(subjects, workload, floor_client, operations, args.warmup)
                results["dbsize_during_throughput"] = int(await admin.dbsize())
                modes: dict[str, Any] = {}
                for mode, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
                    if "throughput" in skip or mode in skip:
                        continue
                    progress(f"throughput: {mode}")
                    outcome = await throughput.run_mode(
                        mode,
                        subjects,
                        workload,
                        admin,
                        floor_client,
                        ops=args.ops,
                        rounds=args.rounds,
                        concurrency=concurrency,
                        operations=operations,
                        progress=progress,
                    )
                    modes[mode] = _mode_json(outcome)
                results["throughput"] = modes
            finally:
                for subject in subjects:
                    await subject.close()

            if "throughput" not in skip:
                progress("round trips per operation")
                results["round_trips"] = await _round_trips(server.url, workload, _selected(OPERATIONS, args.only))

            if "near" not in skip:
                from benchmarks.near import run_near

                await admin.flushall()
                results["near_cache"] = await run_near(
                    server.url,
                    workload,
                    ops=args.ops,
                    rounds=args.rounds,
                    concurrency=args.concurrency,
                    progress=progress,
                )

            if "scale" not in skip:
                sizes = [int(part) for part in args.scale.split(",") if part.strip()]
                points = await scale.run_scale(
                    server.url,
                    sizes,
                    workload,
                    [lambda url: make_ours(url, "bench_ours"), lambda url: make_theirs(url, "bench_theirs")],
                    rounds=args.scale_rounds,
                    calls_per_round=args.scale_calls,
                    round_budget_s=args.scale_budget,
                    progress=progress,
                )
                results["scale"] = [asdict(point) for point in points]
                await admin.flushall()

            if "memory" not in skip:
                progress("memory per LLM entry")
                n = args.memory_entries
                figures = [
                    await memory.measure_memory(
                        lambda: make_theirs(server.url, "mem_theirs"), "betterdb-agent-cache", admin, workload, n
                    ),
                    await memory.measure_memory(
                        lambda: make_ours(server.url, "mem_ours"), "agent-cache", admin, workload, n
                    ),
                    await memory.measure_memory(
                        lambda: make_ours(server.url, "mem_ours_plain", storage={"compress_above_bytes": None}),
                        f"{OURS}, {UNCOMPRESSED}",
                        admin,
                        workload,
                        n,
                    ),
                ]
                results["memory"] = [asdict(figure) for figure in figures]
        finally:
            await admin.aclose()
            await floor_client.aclose()
    return results


def _selected(operations: tuple[Any, ...], only: str) -> tuple[Any, ...]:
    names = {part.strip() for part in only.split(",") if part.strip()}
    unknown = names - {operation.name for operation in operations}
    if unknown:
        raise SystemExit(f"unknown operation(s) {sorted(unknown)}; choose from {[o.name for o in operations]}")
    return tuple(operation for operation in operations if not names or operation.name in names)


async def _round_trips(url: str, workload: Any, operations: tuple[Any, ...]) -> dict[str, dict[str, float]]:
    from benchmarks.operations import seed
    from benchmarks.throughput import CountingConnection, count_round_trips
    from benchmarks.workload import make_ours, make_theirs

    counts: dict[str, dict[str, float]] = {}
    for make in (make_ours, make_theirs):
        subject = make(url, "bench_rt_" + make.__name__.removeprefix("make_"), connection_class=CountingConnection)
        try:
            await seed(subject, workload)
            await asyncio.sleep(0.3)  # start-up background work is not in the counts anyway (other tasks)
            await count_round_trips(subject, workload, operations, n=3)  # scripts load, pools fill
            counts[subject.label] = await count_round_trips(subject, workload, operations)
        finally:
            await subject.close()
    return counts


def _mode_json(outcome: Any) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for name, by_library in outcome.ops.items():
        ops[name] = {
            label: {
                "ops_per_s": series.ops_per_s,
                "rates": series.rates,
                "commands_per_op": series.commands_per_op,
                "command_mix": series.command_mix(),
            }
            for label, series in by_library.items()
        }
    return {
        "concurrency": outcome.concurrency,
        "floor": {
            "ops_per_s": outcome.floor.ops_per_s,
            "rates": outcome.floor.rates,
            "commands_per_op": outcome.floor.commands_per_op,
        },
        "floor_next_to": {
            name: {"ops_per_s": series.ops_per_s, "rates": series.rates} for name, series in outcome.floors.items()
        },
        "ops": ops,
    }
