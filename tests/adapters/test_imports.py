"""Without the provider SDKs the base package still imports, and each adapter names the extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.migration.reference_names import MISSING, table_rows

SDKS = ["openai", "anthropic", "agents", "pydantic_ai", "llama_index"]


def run_without_sdks(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in which importing any provider SDK fails."""
    blocker = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in SDKS)
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_and_the_request_adapters_import_without_sdks() -> None:
    result = run_without_sdks(
        """
        import asyncio
        import agent_cache, agent_cache.adapters
        from agent_cache.adapters import anthropic, llamaindex, openai, openai_responses

        # Key preparation is pure: it needs no SDK.
        params = asyncio.run(openai.prepare_params({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        assert params["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], params
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_using_an_adapter_without_its_sdk_names_the_extra() -> None:
    result = run_without_sdks(
        """
        import asyncio
        from agent_cache import ConfigurationError
        from agent_cache.adapters import anthropic, openai

        async def create(**_):
            raise AssertionError("never called")

        for module, extra in ((openai, "openai"), (anthropic, "anthropic")):
            try:
                asyncio.run(module.cached_create(None, create, model="m", messages=[]))
            except ConfigurationError as exc:
                assert f'pip install "agent-cache[{extra}]"' in str(exc), exc
            else:
                raise AssertionError(module)
        for name, extra in (("openai_agents", "openai-agents"), ("pydantic_ai", "pydantic-ai")):
            try:
                __import__(f"agent_cache.adapters.{name}")
            except ConfigurationError as exc:
                assert f'pip install "agent-cache[{extra}]"' in str(exc), exc
            else:
                raise AssertionError(name)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_base_install_offers_every_top_level_name_of_the_reference() -> None:
    # `from betterdb_agent_cache import X` becomes `from agent_cache import X` with no extra installed: no SDK,
    # framework, aiohttp, orjson or posthog. The names come from docs/migrating.md's checked name table.
    names = [r.ours for r in table_rows() if "." not in r.reference and r.ours != MISSING and "." not in r.ours]
    types_names = [
        r.ours.split(".", 1)[1] for r in table_rows() if r.ours.count(".") == 1 and r.ours.startswith("types.")
    ]
    assert "AgentCache" in names and "AnalyticsOptions" in types_names
    extras = ["langchain_core", "langgraph", "aiohttp", "orjson", "zlib_ng", "posthog", "rich", "yaml"]
    result = run_without_sdks(
        "import sys\n"
        + "".join(f"sys.modules[{name!r}] = None\n" for name in extras)
        + f"from agent_cache import {', '.join(names)}\n"
        + f"from agent_cache.types import {', '.join(types_names)}\n"
        + "print('ok')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
