"""What a newcomer types wrong: a URL, an option, a pipe closed early. One ``error:`` line and exit 2, never a
traceback; a reader that stops early (``| head``) is not a failure."""

from __future__ import annotations

import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_cache.commands._url import UrlError, parse_server_url, redact
from tests.cli.conftest import Populated
from tests.cli.running import AGENT_CACHE, PLAIN_ENV, agent_cache

BAD_URLS = [
    ("valkey://localhost:notaport", "the port must be a number from 1 to 65535, got 'notaport'"),
    ("valkey://localhost:99999", "the port must be a number from 1 to 65535, got '99999'"),
    ("valkey://localhost:0", "the port must be a number from 1 to 65535, got '0'"),
    ("valkey://localhost:", "has a ':' but no port after it"),
    ("valkey://[::1", "an IPv6 address goes in brackets"),
    ("localhost:6379", "--url 'localhost:6379' has no scheme: write valkey://localhost:6379"),
    ("valkey://", "--url 'valkey://' names no host"),
    ("valkey://:6379", "names no host"),
    ("redis://h:6379/abc", "after the host comes only a database number"),
    ("http://127.0.0.1:6379", "the scheme must be one of"),
    ("unix://", "names no socket"),
    ("valkey://127.0.0.1:6379?socket_timeout=soon", "Invalid value for `socket_timeout`"),
    ("valkey://agent:s3cret@localhost:port", "--url 'valkey://agent:***@localhost:port'"),
    ("", "--url is empty"),
]


def assert_one_error_line(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert fragment in lines[0]
    assert "s3cret" not in done.stderr


@pytest.mark.parametrize(("url", "fragment"), BAD_URLS)
def test_a_bad_url_is_one_error_line_for_every_command(url: str, fragment: str) -> None:
    done = agent_cache("stats", "--url", url)
    assert_one_error_line(done, fragment)
    assert done.stdout == ""


@pytest.mark.parametrize(
    "command",
    [["caches"], ["top", "--iterations", "1"], ["tools"], ["config", "show"], ["invalidate", "--tool", "x"]],
)
def test_a_bad_url_from_the_environment(command: list[str]) -> None:
    done = agent_cache(*command, env={"AGENT_CACHE_URL": "valkey://localhost:abc"})
    assert_one_error_line(done, "$AGENT_CACHE_URL 'valkey://localhost:abc': the port must be a number")


@pytest.mark.parametrize(("url", "fragment"), BAD_URLS[:6])
def test_the_demo_reads_the_url_the_same_way(url: str, fragment: str) -> None:
    done = agent_cache("demo", "--url", url, "--speed", "0", "--metrics-port", "0")
    assert_one_error_line(done, fragment)


def test_nothing_listening_on_a_local_port_suggests_agent_cache_server() -> None:
    for command in (["stats"], ["demo", "--metrics-port", "0"]):
        done = agent_cache(*command, "--url", "valkey://localhost:1")
        assert_one_error_line(done, "(nothing listens there: 'agent-cache server --port 1' starts a local Valkey)")
        assert done.stderr.startswith("error: cannot reach Valkey at valkey://localhost:1")


def test_a_password_in_a_url_with_a_bad_option_is_still_one_line() -> None:
    done = agent_cache("stats", "--url", "valkey://:s3cret@127.0.0.1:6379", "--tls-ca-file", "ca.pem")
    assert_one_error_line(done, "--tls-* options need a rediss:// or valkeys:// URL")


def test_a_cluster_has_only_database_0() -> None:
    done = agent_cache("stats", "--url", "valkey://127.0.0.1:7000/3", "--cluster")
    assert_one_error_line(done, "a cluster has only database 0")


def test_a_missing_tls_file_is_named() -> None:
    done = agent_cache("stats", "--url", "rediss://127.0.0.1:6380", "--tls-ca-file", "/nonexistent/ca.pem")
    assert_one_error_line(done, "--tls-ca-file /nonexistent/ca.pem: no such file")


@pytest.mark.parametrize(
    ("text", "shown", "database"),
    [
        ("valkey://localhost:6379", "valkey://localhost:6379", None),
        ("REDIS://h/2", "redis://h/2", 2),
        ("rediss://agent:pw@cache.internal:6380/0", "rediss://cache.internal:6380/0", 0),
        ("valkey://[::1]:7000", "valkey://[::1]:7000", None),
        ("unix:///run/valkey.sock", "unix:///run/valkey.sock", None),
    ],
)
def test_good_urls_are_shown_without_credentials(text: str, shown: str, database: int | None) -> None:
    url = parse_server_url(text)
    assert (url.shown, url.database) == (shown, database)
    assert url.text == text


def test_a_password_is_masked_however_broken_the_url() -> None:
    assert redact("valkey://u:pw@h:x/abc") == "valkey://u:***@h:x/abc"
    assert redact("u:pw@h:6379") == "u:***@h:6379"
    assert redact("valkey://h:6379") == "valkey://h:6379"
    with pytest.raises(UrlError, match=r"u:\*\*\*@h:6379' has no scheme"):
        parse_server_url("u:pw@h:6379")


@pytest.mark.parametrize(
    "command", [["stats"], ["config", "show"], ["top"], ["demo"], ["server"], ["invalidate", "--tool", "x"]]
)
def test_an_unknown_option_shows_the_usage_of_its_command(command: list[str]) -> None:
    done = agent_cache(*command, "--bogus")
    assert done.returncode == 2
    name = " ".join(c for c in command if not c.startswith("-") and c != "x")
    assert done.stderr.startswith(f"usage: agent-cache {name} ")
    assert done.stderr.strip().splitlines()[-1] == f"agent-cache {name}: error: unrecognized arguments: --bogus"


def run_into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """``agent-cache ARGS | head -0``, deterministically: the reading end is closed before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [AGENT_CACHE, *args],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=PLAIN_ENV,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["stats", "--name", "support_bot"],
        ["stats", "--name", "support_bot", "--json"],
        ["caches", "--json"],
        ["top", "--name", "support_bot", "--iterations", "1"],
        ["demo", "--speed", "0", "--requests", "5", "--metrics-port", "0"],
    ],
)
def test_a_reader_that_stops_early_is_not_a_failure(populated: Populated, args: list[str]) -> None:
    done = run_into_a_closed_pipe(*args, "--url", populated.url)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "error" not in done.stderr.lower()


_URLS = st.one_of(
    st.tuples(
        st.sampled_from(["valkey://", "redis://", "rediss://", "VALKEY://", "unix://", "http://", "", "valkey:/"]),
        st.sampled_from(["", "u:pw@", "u@", ":pw@", "u:pw:x@", "u:pw@@"]),
        st.sampled_from(["h", "localhost", "127.0.0.1", "[::1]", "[::1", "", "h%41", "h\n"]),
        st.one_of(
            st.just(""),
            st.integers(-1, 70_000).map(lambda port: f":{port}"),
            st.sampled_from([":", ":abc", ":+1", ":٣", ": 1"]),
        ),
        st.sampled_from(["", "/", "/0", "/15", "/0/", "/abc", "/ 1", "//", "/%30", "/u:pw@"]),
        st.sampled_from(["", "?db=2", "?db=x", "?db=", "?socket_timeout=1", "?socket_timeout=x", "#frag"]),
    ).map("".join),
    st.text(max_size=12),
)


@given(_URLS)
@settings(max_examples=300, deadline=None)
def test_any_url_is_refused_with_a_reason_or_means_what_valkey_py_connects_to(text: str) -> None:
    """Whatever is typed: a UrlError (one line for the user), or the host, port and database valkey-py will use."""
    from valkey._parsers.url_parser import parse_url

    try:
        url = parse_server_url(text)
    except UrlError as exc:
        assert "\n" not in str(exc) and "u:pw@" not in str(exc)
        return
    try:
        kwargs = parse_url(url.text, async_connection=True)
    except ValueError:
        return  # a query argument only valkey-py checks: _client turns it into one error line
    if url.scheme == "unix":
        assert kwargs.get("path") == url.socket_path
        return
    connects_to = (kwargs.get("host"), kwargs.get("port", 6379), kwargs.get("db", 0))
    assert connects_to == (url.host, url.port or 6379, url.database or 0)
