"""Run the Python examples of betterdb-agent-cache 0.12.0's README, as a migrating user would.

    python -m tests.migration.run_reference_readme --package ours|reference --url valkey://127.0.0.1:PORT

The README is read from the installed reference package's metadata (its PyPI long description), so it is the
README of the version we claim to replace. With ``--package ours`` the only edit is the import lines
(``betterdb_agent_cache`` → ``agent_cache``); ``--package reference`` runs them as published, as a control that
the harness is fair. Blocks share one namespace and may use top-level ``await`` (``tests/docs/doc_blocks``), and
``localhost:6379`` is the test's Valkey.

The README leaves some names to the reader (``call_llm``, ``openai_params``, ``agent``...): ``READER`` defines
them, in plain code the reader would write, and the Agents SDK's provider points at a loopback server. Three
blocks hold a literal ``...`` placeholder; ``PLACEHOLDERS`` fills each with a value, identically for both
packages. Every block runs even after one fails. Tab-separated lines: ``ok SECTION#N LINE`` or
``error SECTION#N LINE TYPE MESSAGE`` per block, ``value NAME JSON`` for what the examples computed, and
``connect HOST`` for any non-loopback address a socket was asked to reach (refused: neither package may phone
home here).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import importlib.metadata
import inspect
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.docs.doc_blocks import Block, blocks, rewrite_connections

REFERENCE = "betterdb-agent-cache"
REFERENCE_VERSION = "0.12.0"

# The README's literal `...` placeholders, and what a reader would put there (the same for both packages).
PLACEHOLDERS = {
    "LlmStoreOptions(...)": "LlmStoreOptions(ttl=600)",
    "cost_table={...},": 'cost_table={"my-model": ModelCost(input_per_1k=0.001, output_per_1k=0.002)},',
    "AgentCacheOptions(client=client, ...)": "AgentCacheOptions(client=client)",
}

# What the README's examples expect the reader to have defined. Runs before the first block.
READER = """
import json
import os
from typing import TypedDict

from aiohttp import web
from agents import Agent, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI

from betterdb_agent_cache import LlmStoreOptions, ToolPolicy, ToolStoreOptions
from tests.adapters.wire import chat_completion


async def call_llm(params):
    return "Valkey is an in-memory data store."


async def get_weather(city):
    return {"city": city, "temperature_c": 21}


params = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0}
response = "Hello! How can I help?"
blocks = [
    {"type": "text", "text": "Let me look that up."},
    {"type": "tool_call", "id": "call_1", "name": "get_weather", "args": {"city": "Sofia"}},
]
json_result = json.dumps({"city": "Sofia", "temperature_c": 21})
IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
openai_params = {
    "model": "gpt-4o",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}"}},
            ],
        }
    ],
}
responses_params = {
    "model": "gpt-4o",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in this image?"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{IMAGE}"},
            ],
        }
    ],
}
anthropic_params = {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}
messages = [{"role": "user", "content": "What is Valkey?"}]  # LlamaIndex chat messages, as dicts


# The Agents SDK talks to an OpenAI-compatible server on loopback.
async def _chat(request):
    return web.json_response(chat_completion("Hello from loopback."))


_app = web.Application()
_app.router.add_post("/v1/chat/completions", _chat)
_runner = web.AppRunner(_app)
await _runner.setup()
_site = web.TCPSite(_runner, "127.0.0.1", 0)
await _site.start()
_base_url = "http://%s:%d/v1" % _runner.addresses[0][:2]
provider = OpenAIProvider(openai_client=AsyncOpenAI(base_url=_base_url, api_key="test-key"), use_responses=False)
agent = Agent(name="Assistant", instructions="Answer briefly.")
set_tracing_disabled(True)  # the Agents SDK would otherwise export traces to OpenAI

os.environ["OPENAI_API_KEY"] = "test-key"  # ChatOpenAI (LangChain) wants one; it is never called
os.environ["OPENAI_BASE_URL"] = _base_url


class schema(TypedDict):
    messages: list


def agent_node(state):
    return {"messages": []}
"""

_IMPORT = re.compile(r"^(?P<indent>\s*)(?P<verb>from|import)\s+betterdb_agent_cache\b", re.M)
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Values the README's calls leave in the namespace, printed so the test can compare the two packages' answers.
OBSERVED = ("intent", "all_fields", "deleted", "existed", "entries", "stats")


def reference_readme() -> str:
    """The README of the installed reference package (its metadata's long description)."""
    version = importlib.metadata.version(REFERENCE)
    if version != REFERENCE_VERSION:
        raise RuntimeError(f"{REFERENCE} {version} is installed; these examples are {REFERENCE_VERSION}'s")
    payload = importlib.metadata.metadata(REFERENCE).get_payload()  # type: ignore[attr-defined]
    return str(payload)


def for_ours(code: str) -> str:
    """The import lines rewritten to agent-cache; nothing else."""
    return _IMPORT.sub(lambda m: f"{m.group('indent')}{m.group('verb')} agent_cache", code)


def python_blocks(readme: str) -> list[tuple[str, Block]]:
    """``(SECTION#N, block)`` for each Python block; SECTION is the heading above it."""
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder, "README.md")
        page.write_text(readme)
        found = [block for block in blocks(page) if block.language == "python"]
    lines = readme.splitlines()
    named: list[tuple[str, Block]] = []
    counts: dict[str, int] = {}
    for block in found:
        heading = next(
            (lines[i].lstrip("#").strip() for i in range(block.line - 2, -1, -1) if lines[i].startswith("#")), "top"
        )
        counts[heading] = counts.get(heading, 0) + 1
        named.append((f"{heading}#{counts[heading]}", block))
    return named


class Reader:
    def __init__(self, package: str, standalone: tuple[str, int]) -> None:
        self.package = package
        self.standalone = standalone
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.runner = asyncio.Runner()

    def source(self, code: str) -> str:
        for placeholder, value in PLACEHOLDERS.items():
            code = code.replace(placeholder, value)
        if self.package == "ours":
            code = for_ours(code)
        return rewrite_connections(code, self.standalone, None)

    def run(self, code: str, filename: str) -> None:
        compiled = compile(self.source(code), filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if compiled.co_flags & inspect.CO_COROUTINE:
            self.runner.run(eval(compiled, self.namespace))
        else:
            exec(compiled, self.namespace)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", choices=("ours", "reference"), required=True)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    os.environ["BETTERDB_TELEMETRY"] = "false"  # the reference's analytics switch, read before it is imported

    def audit(event: str, event_args: tuple[Any, ...]) -> None:
        # Anything but loopback is refused, and reported: neither package may phone home here.
        if event == "socket.connect" and isinstance(event_args[1], tuple):
            host = str(event_args[1][0])
        elif event == "socket.getaddrinfo":
            host = str(event_args[0])
        else:
            return
        if host not in _LOOPBACK:
            print(f"connect\t{host}", flush=True)
            raise PermissionError(f"{host}: only loopback may be reached from these examples")

    sys.addaudithook(audit)
    parts = urlsplit(args.url)
    reader = Reader(args.package, (parts.hostname or "127.0.0.1", parts.port or 6379))
    reader.run(READER, "<reader>")
    for name, block in python_blocks(reference_readme()):
        try:
            reader.run(block.code, f"README.md:{block.line}")
        except BaseException as exc:  # every failure is reported; the next block still runs
            message = str(exc).splitlines()[0] if str(exc) else ""
            print(f"error\t{name}\t{block.line}\t{type(exc).__name__}\t{message}", flush=True)
        else:
            print(f"ok\t{name}\t{block.line}", flush=True)
    for observed in OBSERVED:
        value = reader.namespace.get(observed)
        print(f"value\t{observed}\t{json.dumps(_plain(value), sort_keys=True)}", flush=True)
    print(f"value\tposthog_loaded\t{json.dumps('posthog' in sys.modules)}", flush=True)
    # Like the README, close nothing but the event loop (as asyncio.run would): the process must still exit.
    reader.runner.close()
    return 0


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
