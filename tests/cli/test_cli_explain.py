"""``agent-cache explain``: the key a real store used, the fields two requests differ in, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache
from tests.cli.running import agent_cache

REQUEST = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Where is my order?"},
    ],
    "temperature": 0,
    "stream": True,
    "extra_headers": {"Authorization": "Bearer secret", "anthropic-beta": "tools"},
}


def write(tmp_path: Path, name: str, document: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


async def test_the_key_shown_is_the_key_a_store_writes(valkey_client: Valkey, tmp_path: Path) -> None:
    async with AgentCache(client=valkey_client, name="support_bot") as cache:
        stored = await cache.llm.store(REQUEST, "It ships today.")
        with cache.tenant("acme"):
            acme = await cache.llm.store(REQUEST, "It ships today.")
    request = write(tmp_path, "request.json", REQUEST)
    done = agent_cache("explain", "-f", request, "--name", "support_bot")
    assert done.returncode == 0, done.stderr
    assert f"key:       {stored}\n" in done.stdout
    assert 'extra_headers["Authorization"] (transport header), stream (transport-only)' in done.stdout
    assert "secret" not in done.stdout  # a transport header's value is never printed

    document = json.loads(agent_cache("explain", "-f", request, "--name", "support_bot", "--json").stdout)
    assert document["key"] == stored and document["included"] == ["extra_headers", "messages", "model", "temperature"]
    assert json.loads(agent_cache("explain", "-f", request, "-n", "support_bot", "--tenant", "acme",
                                  "--json").stdout)["key"] == acme  # fmt: skip

    found = agent_cache("explain", "-f", request, "--key", acme, "--tenant", "other", "--tenant", "acme")
    assert found.returncode == 0 and f"maps to {acme} under tenant 'acme'" in found.stdout, found.stdout
    missed = agent_cache("explain", "-f", request, "--key", acme)
    assert missed.returncode == 1 and "try --tenant" in missed.stdout
    assert agent_cache("explain", "-f", request, "--key", stored.rsplit(":", 1)[1]).returncode == 0  # the hash alone
    elsewhere = agent_cache("explain", "-f", request, "--key", stored, "--name", "other_bot")
    assert elsewhere.returncode == 1 and "not an LLM key of cache 'other_bot'" in elsewhere.stdout
    assert agent_cache("explain", "-f", request, "--key", stored).returncode == 0  # the name comes from the key


def test_against_lists_the_paths_that_differ(tmp_path: Path) -> None:
    other = {**REQUEST, "messages": [REQUEST["messages"][0], {"role": "user", "content": "Where is my order ?"}]}
    other |= {"temperature": 0.0, "stream": False, "seed": 7}
    left, right = write(tmp_path, "a.json", REQUEST), write(tmp_path, "b.json", other)
    done = agent_cache("explain", "-f", left, "--against", right)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[2:] == [
        "different keys: 2 field(s) of the key differ",
        '  messages[1].content: "Where is my order?" -> "Where is my order ?"',
        "  seed: (absent) -> 7",
    ]
    report = json.loads(agent_cache("explain", "-f", left, "--against", right, "--json").stdout)
    assert report["same_key"] is False and [d["path"] for d in report["differences"]] == ["messages[1].content", "seed"]
    same = agent_cache("explain", "-f", left, "--against", write(tmp_path, "c.json", {**REQUEST, "user": "u-9"}))
    assert same.returncode == 0 and "the same key" in same.stdout


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ('{"model": "m",\n  oops}', [], "not JSON: Expecting property name enclosed in double quotes: line 2"),
        ("[1, 2]", [], "expected a JSON object of request params, got list"),
        ('{"messages": []}', [], "params.model must be a non-empty string"),
        ('{"model": "m", "temperature": NaN}', [], "params.temperature is nan"),
        ('{"model": "m"}', ["--name", "bad name"], "cache name 'bad name' is invalid"),
        ('{"model": "m"}', ["--tenant", "a", "--tenant", "b"], "--tenant more than once goes with --key"),
        ('{"model": "m"}', ["--against", "/nonexistent/x.json"], "--against /nonexistent/x.json: No such file"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path: Path, content: str, extra: list[str], message: str) -> None:
    done = agent_cache("explain", "-f", write(tmp_path, "r.json", content), *extra)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and message in done.stderr, done.stderr
