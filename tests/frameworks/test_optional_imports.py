"""The frameworks are extras: the base package and the sync facade import without them, and the adapters
say which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK = "import sys; [sys.modules.__setitem__(m, None) for m in ('langchain_core', 'langgraph')]; "


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=120)


def test_base_package_and_sync_facade_need_no_framework() -> None:
    result = run("import agent_cache, agent_cache.sync; print(agent_cache.SyncAgentCache.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SyncAgentCache"


@pytest.mark.parametrize(("module", "extra"), [("langchain", "langchain"), ("langgraph", "langgraph")])
def test_adapters_name_their_extra(module: str, extra: str) -> None:
    result = run(f"import agent_cache.adapters.{module}")
    assert result.returncode != 0
    assert "ConfigurationError" in result.stderr
    assert f'pip install "agent-cache[{extra}]"' in result.stderr
