"""``agent-cache stats`` and what every subcommand shares: connecting, passwords, the embedded server, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import TOOL_CALLS, Populated
from tests.cli.running import agent_cache


def test_json_matches_what_the_library_reports(populated: Populated) -> None:
    done = agent_cache("stats", "--url", populated.url, "--name", populated.name, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    stats = populated.stats
    assert report["name"] == "support_bot"
    assert report["llm"] == {"hits": 5, "misses": 1, "hit_rate": stats.llm.hit_rate}
    assert (report["tool"]["hits"], report["tool"]["misses"]) == (stats.tool.hits, stats.tool.misses)
    assert report["session"] == {"reads": stats.session.reads, "writes": 4}
    assert report["cost_saved_micros"] == stats.cost_saved_micros > 0
    assert report["cost_saved"] == stats.cost_saved
    assert set(report["per_tool"]) == set(TOOL_CALLS)
    for tool, (hits, misses) in TOOL_CALLS.items():
        row = report["per_tool"][tool]
        assert (row["hits"], row["misses"]) == (hits, misses)
        assert row["ttl"] == stats.per_tool[tool].ttl  # the TTL the cache's own instance resolves
    assert report["per_tool"]["get_weather"]["ttl"] == 600 and report["per_tool"]["search"]["ttl"] == 300
    assert report["per_tool"]["get_weather"]["cost_saved"] == pytest.approx(0.27)


def test_tables_on_a_pipe_are_plain_text(populated: Populated) -> None:
    done = agent_cache("stats", "--url", populated.url, "--name", populated.name)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert any(line.split()[:4] == ["LLM", "5", "1", "83.3%"] for line in lines if line.strip())
    assert any(line.split()[:5] == ["get_weather", "30", "27", "3", "90.0%"] for line in lines if line.strip())
    assert "Session  0 reads · 4 writes" in done.stdout


def test_the_only_registered_cache_is_the_default(populated: Populated) -> None:
    done = agent_cache("stats", "--url", populated.url, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "support_bot"
    assert "the only one in this Valkey's discovery registry" in done.stderr


def test_url_and_name_from_the_environment(populated: Populated) -> None:
    done = agent_cache("stats", "--json", env={"AGENT_CACHE_URL": populated.url, "AGENT_CACHE_NAME": "support_bot"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tool"]["hits"] == populated.stats.tool.hits


def test_no_such_cache_exits_3_without_a_table_of_zeros(populated: Populated) -> None:
    table = agent_cache("stats", "--url", populated.url, "--name", "no_such_cache")
    assert table.returncode == 3
    assert table.stdout == ""
    assert "no cache named 'no_such_cache' in this Valkey" in table.stderr
    document = agent_cache("stats", "--url", populated.url, "--name", "no_such_cache", "--json")
    assert document.returncode == 3
    assert json.loads(document.stdout)["llm"]["hits"] == 0  # scripts still get the (zero) document


def test_a_known_cache_without_counters_shows_zeros_and_exits_3(populated: Populated) -> None:
    flushed = agent_cache("flush", "--url", populated.url, "--name", populated.name, "--yes")
    assert flushed.returncode == 0, flushed.stderr  # counters gone; the discovery entry stays
    done = agent_cache("stats", "--url", populated.url, "--name", populated.name)
    assert done.returncode == 3
    assert any(line.split()[:4] == ["LLM", "0", "0", "—"] for line in done.stdout.splitlines() if line.strip())
    assert "has no counters yet" in done.stderr


@pytest.mark.valkey
def test_without_a_url_it_says_the_embedded_server_is_empty() -> None:
    done = agent_cache("stats")
    assert done.returncode == 3
    assert "embedded valkey-server" in done.stderr and "nothing to inspect" in done.stderr
    assert done.stdout == ""


def test_an_unreachable_server_is_one_line_and_exit_2() -> None:
    done = agent_cache("stats", "--url", "valkey://127.0.0.1:1", "--timeout", "2")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Valkey at valkey://127.0.0.1:1"), done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:6379"], "the scheme must be one of"),
        (["--cluster"], "--cluster needs --url"),
        (["--url", "valkey://127.0.0.1:6379", "--tls-ca-file", "ca.pem"], "need a rediss:// or valkeys:// URL"),
        (["--url", "valkey://127.0.0.1:6379", "--password-env", "AGENT_CACHE_TEST_UNSET"], "that variable is not set"),
        (["--url", "valkey://127.0.0.1:6379", "--password-file", "/nonexistent/pw"], "--password-file"),
        (["--url", "valkey://:pw@127.0.0.1:6379", "--password-env", "HOME"], "give it in one place only"),
        (["--name", "not a name"], "cache name 'not a name' is invalid"),
    ],
)
def test_bad_options_exit_2_with_the_reason(args: list[str], message: str) -> None:
    done = agent_cache("stats", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
async def protected(valkey_server_factory: Callable[..., Any]) -> str:
    """A password-protected server holding cache support_bot; returns its URL without the password."""
    from valkey.asyncio import Valkey

    from tests.cli.conftest import make_cache, populate

    server = valkey_server_factory(password="s3cret pass")
    client = Valkey.from_url(server.url)
    async with make_cache(client) as cache:
        await populate(cache)
    await client.aclose()
    return f"valkey://127.0.0.1:{server.port}"


def test_password_from_an_environment_variable(protected: str) -> None:
    done = agent_cache(
        "stats", "--url", protected, "--name", "support_bot", "--password-env", "VK_PASS", "--json",
        env={"VK_PASS": "s3cret pass"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["llm"]["hits"] == 5
    assert "s3cret" not in done.stderr + done.stdout


def test_password_from_a_file(protected: str, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret pass\n")
    done = agent_cache("stats", "--url", protected, "--name", "support_bot", "--password-file", str(secret), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tool"]["hits"] == sum(hits for hits, _ in TOOL_CALLS.values())


def test_a_missing_or_wrong_password_is_a_connection_error(protected: str) -> None:
    missing = agent_cache("stats", "--url", protected, "--name", "support_bot")
    wrong = agent_cache(
        "stats", "--url", protected, "--name", "support_bot", "--password-env", "VK_PASS", env={"VK_PASS": "nope"}
    )
    for done in (missing, wrong):
        assert done.returncode == 2
        assert done.stderr.startswith(f"error: cannot reach Valkey at {protected}")
        assert "nope" not in done.stderr


def test_a_password_in_the_url_works_with_a_warning(protected: str) -> None:
    url = protected.replace("valkey://", "valkey://:s3cret%20pass@")
    done = agent_cache("stats", "--url", url, "--name", "support_bot", "--json")
    assert done.returncode == 0, done.stderr
    assert "visible to other users in the process list" in done.stderr
    assert "s3cret" not in done.stderr
