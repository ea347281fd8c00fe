"""A separate process for the single-flight tests: N concurrent get_or_compute calls on one tool key.

Usage: python flight_worker.py URL CALLS LEASE_S COMPUTE_S [cancel-leader] — prints the responses as a JSON
list. Each real computation INCRs ``flight:computations`` so the test can count them across processes.

With ``cancel-leader``: a leader starts computing (the first computation never ends), CALLS followers join it,
the worker prints ``computing``, and when a line arrives on stdin it cancels the leader only. It then prints
the followers' outcomes (a response, or the name of the exception that ended the call) and the leader's.
"""

from __future__ import annotations

import asyncio
import json
import sys

from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, ConfigRefreshOptions, DiscoveryOptions, ReliabilityOptions, TelemetryOptions


async def main(url: str, calls: int, lease_s: float, compute_s: float, cancel_leader: bool) -> None:
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
    if cancel_leader:
        await run_and_cancel_the_leader(client, cache, calls, compute_s)
    else:
        results = await asyncio.gather(
            *(cache.tool.get_or_compute("slow_tool", {"q": 1}, compute) for _ in range(calls))
        )
        print(json.dumps([r.response for r in results]), flush=True)
    await cache.close()
    await client.aclose()


async def run_and_cancel_the_leader(client: Valkey, cache: AgentCache, calls: int, compute_s: float) -> None:
    started = asyncio.Event()

    async def compute() -> str:
        if await client.incr("flight:computations") == 1:
            started.set()
            await asyncio.Event().wait()  # the first computation only ends by cancellation
        await asyncio.sleep(compute_s)
        return "computed"

    leader = asyncio.create_task(cache.tool.get_or_compute("slow_tool", {"q": 1}, compute))
    await started.wait()
    followers = [asyncio.create_task(cache.tool.get_or_compute("slow_tool", {"q": 1}, compute)) for _ in range(calls)]
    for _ in range(3):
        await asyncio.sleep(0)  # every follower has joined the leader's flight
    print("computing", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    leader.cancel()
    outcomes = await asyncio.gather(*followers, return_exceptions=True)
    shown = [type(o).__name__ if isinstance(o, BaseException) else o.response for o in outcomes]
    print(json.dumps({"followers": shown, "leader_cancelled": leader.cancelled()}), flush=True)


if __name__ == "__main__":
    cancel_leader = sys.argv[5:] == ["cancel-leader"]
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), cancel_leader))
