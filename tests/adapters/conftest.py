"""A loopback HTTP server that speaks the providers' wire formats, and caches on the real Valkey fixture.

The provider SDKs are the real clients, pointed with ``base_url`` at an aiohttp server on 127.0.0.1 (ephemeral
port) in the test's own event loop. The server answers the scripted replies in order — JSON bodies or SSE
streams, optionally cut off mid-stream — and records every request, so a test can assert that a cache hit never
reached the provider. Nothing is mocked and nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, DiscoveryOptions, TelemetryOptions

_names = itertools.count()


@dataclass
class Reply:
    body: Any = None
    events: list[tuple[str | None, Any]] | None = None
    """SSE events as ``(event name or None, data)``; data that is not a string is sent as JSON."""
    cut_after: int | None = None
    """Close the connection after this many events, without finishing the body (a dropped stream)."""
    status: int = 200


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]


@dataclass
class ProviderServer:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    def reply_json(self, body: Any, status: int = 200) -> None:
        self.replies.append(Reply(body=body, status=status))

    def reply_sse(self, events: list[tuple[str | None, Any]], cut_after: int | None = None) -> None:
        self.replies.append(Reply(events=events, cut_after=cut_after))

    def calls(self, path: str | None = None) -> int:
        return sum(1 for r in self.requests if path is None or r.path == path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded(request.path, await request.json()))
        if not self.replies:
            return web.json_response({"error": {"message": "no scripted reply left"}}, status=500)
        reply = self.replies.pop(0)
        if reply.events is None:
            return web.json_response(reply.body, status=reply.status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for count, (name, data) in enumerate(reply.events):
            if reply.cut_after is not None and count == reply.cut_after:
                await asyncio.sleep(0)
                assert request.transport is not None
                request.transport.close()  # the provider went away mid-answer
                return response
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            await response.write(frame.encode())
        await response.write_eof()
        return response


@pytest.fixture
async def provider() -> AsyncIterator[ProviderServer]:
    server = ProviderServer()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def cache(valkey_client: Valkey) -> AsyncIterator[AgentCache]:
    """A cache on the real (empty) Valkey with its own metrics registry."""
    instance = AgentCache(
        client=valkey_client,
        name=f"adapters{next(_names)}",
        telemetry=TelemetryOptions(registry=CollectorRegistry()),
        discovery=DiscoveryOptions(enabled=False),
    )
    try:
        yield instance
    finally:
        await instance.close()
