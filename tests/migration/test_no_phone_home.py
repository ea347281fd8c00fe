"""Whatever ``analytics=`` says, agent-cache reaches nothing but the Valkey it was given.

The reference sends PostHog events unless told not to; code migrating from it may say ``disabled=False`` (or
leave the default). A fresh interpreter refuses, through an audit hook, every socket that is not loopback and
every DNS lookup, then exercises each tier with analytics "on" and closes the cache.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.docs.doc_blocks import ROOT
from tests.servers import ServerHandle

pytestmark = pytest.mark.valkey

PROGRAM = """
import asyncio
import sys

reached = []


def refuse_the_outside(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple):
        host = str(args[1][0])
    elif event == "socket.getaddrinfo":
        host = str(args[0])
    else:
        return
    if host not in ("127.0.0.1", "::1", "localhost"):
        reached.append(host)
        raise PermissionError(host)


sys.addaudithook(refuse_the_outside)

import valkey.asyncio as valkey_client

from agent_cache import AgentCache, AgentCacheOptions
from agent_cache.types import AnalyticsOptions


async def main() -> None:
    client = valkey_client.Valkey(host="127.0.0.1", port=PORT)
    options = AgentCacheOptions(
        client=client, name="phone_home", analytics=AnalyticsOptions(disabled=False, stats_interval_s=0.01)
    )
    async with AgentCache(options) as cache:
        params = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        await cache.llm.check(params)
        await cache.llm.store(params, "hello")
        await cache.tool.store("get_weather", {"city": "Sofia"}, "sunny")
        await cache.session.set("thread-1", "intent", "book")
        await cache.stats()
        await cache.ensure_discovery_ready()
        await asyncio.sleep(0.1)  # a reporting loop, if there were one, would have run by now
    await client.aclose()


asyncio.run(main())
print("reached:", reached, "posthog:", "posthog" in sys.modules)
"""


def test_analytics_on_reaches_nothing_but_valkey(valkey_server: ServerHandle) -> None:
    program = textwrap.dedent(PROGRAM).replace("PORT", str(valkey_server.port))
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reached: [] posthog: False", done.stdout + done.stderr
