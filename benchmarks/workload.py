"""What both libraries are asked to do: the same requests, responses, tool calls and session values.

``Subject`` wraps one cache instance (ours or the competitor's) behind the API both share (the reference
package's), so every operation runs the identical call on each. Settings are the same on both sides: the
same tier TTLs, discovery and config refresh on (each library's defaults), Prometheus metrics in a
private registry each, and no OpenTelemetry SDK configured (both get the API's no-op tracer).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

# Longer than a run: the entries seeded at the start must still be hits at the end.
LLM_TTL = 3600
TOOL_TTL = 3600
SESSION_TTL = 3600
MODEL = "gpt-4o"

_WORDS = (
    "the a of to and in is that for it as with on be by this are or from at an which was not but can have "
    "cache valkey agent request response model token latency memory key value store thread session tool "
    "result function call query user system message answer question context window prompt completion data "
    "server client network round trip hit miss expiry index cluster node slot replica primary configuration "
    "performance throughput benchmark measure compare ratio operation command pipeline script lua hash json "
    "because when where while however therefore although since unless until after before during between "
    "first second third next last every each some many few more most less least other another same different "
    "important useful simple complex fast slow large small high low new old good better best available"
).split()


def prose(rng: random.Random, size: int) -> str:
    """English-like text of about ``size`` characters (compresses like real LLM output, ~3x with zlib)."""
    words: list[str] = []
    length = 0
    while length < size:
        sentence = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
        text = " ".join(sentence).capitalize() + ". "
        words.append(text)
        length += len(text)
    return "".join(words)[:size]


def llm_request(index: int, *, target_bytes: int = 3000, variant: str = "hit") -> dict[str, Any]:
    """A typical chat request (system prompt, a few turns, two tools) of about ``target_bytes`` of JSON."""
    rng = random.Random(f"{variant}-{index}")
    messages: list[dict[str, Any]] = [{"role": "system", "content": prose(rng, 600)}]
    body = 0
    turn = 0
    while body < target_bytes - 1600:
        role = "user" if turn % 2 == 0 else "assistant"
        content = prose(rng, 300)
        messages.append({"role": role, "content": content})
        body += len(content) + 40
        turn += 1
    messages.append({"role": "user", "content": f"[{variant} #{index}] " + prose(rng, 120)})
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": prose(rng, 80),
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
                    "required": ["query"],
                },
            },
        }
        for name in ("search_docs", "get_weather")
    ]
    return {"model": MODEL, "messages": messages, "tools": tools, "temperature": 0.2, "max_tokens": 1024}


def large_request(target_bytes: int = 17_000) -> dict[str, Any]:
    """A long conversation (~17 KB of JSON): what key derivation costs on a big agent context."""
    return llm_request(0, target_bytes=target_bytes, variant="large")


@dataclass
class Workload:
    """Inputs shared by both libraries; ``pool`` distinct items of each kind, used round-robin."""

    pool: int = 256
    threads: int = 64
    fields_per_thread: int = 5
    response_bytes: int = 2048
    request_bytes: int = 3000
    large_pool: int = 16
    hit_requests: list[dict[str, Any]] = field(default_factory=list)
    large_requests: list[dict[str, Any]] = field(default_factory=list)
    miss_requests: list[dict[str, Any]] = field(default_factory=list)
    store_requests: list[dict[str, Any]] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    tool_args: list[dict[str, Any]] = field(default_factory=list)
    tool_response: str = ""
    session_value: str = ""

    def __post_init__(self) -> None:
        rng = random.Random(7)
        self.hit_requests = [llm_request(i, target_bytes=self.request_bytes) for i in range(self.pool)]
        self.large_requests = [llm_request(i, target_bytes=17_000, variant="large") for i in range(self.large_pool)]
        self.miss_requests = [llm_request(i, target_bytes=self.request_bytes, variant="miss") for i in range(self.pool)]
        self.store_requests = [
            llm_request(i, target_bytes=self.request_bytes, variant="store") for i in range(self.pool)
        ]
        self.responses = [prose(rng, self.response_bytes) for _ in range(self.pool)]
        self.tool_args = [{"city": f"city-{i}", "units": "metric", "days": 3} for i in range(self.pool)]
        self.tool_response = '{"forecast": "' + prose(rng, 480) + '"}'
        self.session_value = prose(rng, 200)

    def thread(self, index: int) -> str:
        return f"thread-{index % self.threads}"

    def field_name(self, index: int) -> str:
        return f"field-{index % self.fields_per_thread}"


@dataclass
class Subject:
    """One library's cache behind the shared (reference) API."""

    label: str
    cache: Any
    client: Any
    llm_options: Callable[[], Any]
    tool_options: Callable[[], Any]
    close: Callable[[], Awaitable[None]]


def _pool_client(url: str, connection_class: type | None = None) -> Valkey:
    from valkey.asyncio import ConnectionPool

    kwargs: dict[str, Any] = {} if connection_class is None else {"connection_class": connection_class}
    return Valkey.from_pool(ConnectionPool.from_url(url, **kwargs))


def make_ours(
    url: str,
    name: str,
    *,
    storage: dict[str, Any] | None = None,
    connection_class: type | None = None,
    near_cache: dict[str, Any] | None = None,
) -> Subject:
    """Our cache with default settings (``storage`` overrides the storage options, e.g. compression off;
    ``near_cache`` turns the in-process L1 on with those options)."""
    from agent_cache import AgentCache, LlmStoreOptions, TelemetryOptions, TierDefaults, ToolStoreOptions

    client = _pool_client(url, connection_class)
    cache = AgentCache(
        client=client,
        name=name,
        tier_defaults={
            "llm": TierDefaults(ttl=LLM_TTL),
            "tool": TierDefaults(ttl=TOOL_TTL),
            "session": TierDefaults(ttl=SESSION_TTL),
        },
        telemetry=TelemetryOptions(registry=CollectorRegistry()),
        **({"storage": storage} if storage is not None else {}),
        **({"near_cache": near_cache} if near_cache is not None else {}),
    )

    async def close() -> None:
        await cache.close()
        await client.aclose()

    return Subject(
        label="agent-cache" if near_cache is None else "agent-cache, near-cache",
        cache=cache,
        client=client,
        llm_options=lambda: LlmStoreOptions(tokens={"input": 800, "output": 500}),
        tool_options=lambda: ToolStoreOptions(cost=0.001),
        close=close,
    )


def make_theirs(url: str, name: str, *, connection_class: type | None = None) -> Subject:
    from benchmarks import competitor

    package, types = competitor.load()
    client = _pool_client(url, connection_class)
    cache = package.AgentCache(
        types.AgentCacheOptions(
            client=client,
            name=name,
            tier_defaults={
                "llm": types.TierDefaults(ttl=LLM_TTL),
                "tool": types.TierDefaults(ttl=TOOL_TTL),
                "session": types.TierDefaults(ttl=SESSION_TTL),
            },
            telemetry=types.TelemetryOptions(registry=CollectorRegistry()),
            analytics=types.AnalyticsOptions(disabled=True, stats_interval_s=0),
        )
    )

    async def close() -> None:
        await cache.shutdown()
        await client.aclose()

    return Subject(
        label="betterdb-agent-cache",
        cache=cache,
        client=client,
        llm_options=lambda: types.LlmStoreOptions(tokens={"input": 800, "output": 500}),
        tool_options=lambda: types.ToolStoreOptions(cost=0.001),
        close=close,
    )
