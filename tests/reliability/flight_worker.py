"""A separate process for the single-flight tests: N concurrent get_or_compute calls on one tool key.

Usage: python flight_worker.py URL CALLS LEASE_S COMPUTE_S — prints the responses as a JSON list. Each
real computation INCRs ``flight:computations`` so the test can count them across processes.
"""

from __future__ import annotations

import asyncio
import json
import sys

from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, ConfigRefreshOptions, DiscoveryOptions, ReliabilityOptions, TelemetryOptions


async def main(url: str, calls: int, lease_s: float, compute_s: float) -> None:
    client = Valkey.from_url(url)
    cache = AgentCache(
        client=client,
        name="flight",
        telemetry=TelemetryOptions(registry=CollectorRegistry()),
        discovery=DiscoveryOptions(enabled=False),
        config_refresh=ConfigRefreshOptions(enabled=False),
        reliability=ReliabilityOptions(lock_lease_s=lease_s),
    )

    async def compute() -> str:
        await client.incr("flight:computations")
        await asyncio.sleep(compute_s)
        return "computed"

    print("ready", flush=True)
    results = await asyncio.gather(*(cache.tool.get_or_compute("slow_tool", {"q": 1}, compute) for _ in range(calls)))
    print(json.dumps([r.response for r in results]), flush=True)
    await cache.close()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
