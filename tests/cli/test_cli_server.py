"""``agent-cache server``: the README's Valkey without Docker — it serves until Ctrl-C or SIGTERM, then it is gone."""

from __future__ import annotations

import os
import re
import signal
import socket

import pytest
import valkey

from tests.cli.running import agent_cache, start_agent_cache

pytestmark = pytest.mark.valkey


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def pid_is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_serves_until_stopped_and_leaves_nothing_behind(stop_with: signal.Signals) -> None:
    with start_agent_cache("server", "--port", "0") as server:
        try:
            assert server.stdout is not None
            first = server.stdout.readline()
            match = re.search(r"valkey-server on (valkey://127\.0\.0\.1:(\d+)) \(pid (\d+)\)", first)
            assert match, first
            url, port, pid = match.group(1), int(match.group(2)), int(match.group(3))
            client = valkey.Valkey.from_url(url)
            client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
            client.close()
            server.send_signal(stop_with)
            stdout, stderr = server.communicate(timeout=30)
        finally:
            server.kill()
    assert server.returncode == 0, stderr
    assert "valkey-server stopped" in stdout and "Traceback" not in stderr
    assert not port_is_open(port)
    assert not pid_is_alive(pid)


def test_a_taken_port_is_one_error_line(valkey_url: str) -> None:
    port = valkey_url.rsplit(":", 1)[1]
    done = agent_cache("server", "--port", port)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: port {port} on 127.0.0.1 is already in use"), done.stderr


def test_a_server_that_dies_is_reported_with_exit_1() -> None:
    with start_agent_cache("server", "--port", "0") as server:
        try:
            assert server.stdout is not None
            match = re.search(r"\(pid (\d+)\)", server.stdout.readline())
            assert match
            os.kill(int(match.group(1)), signal.SIGKILL)
            _, stderr = server.communicate(timeout=30)
        finally:
            server.kill()
    assert server.returncode == 1
    assert stderr.startswith("error: valkey-server exited on its own with code -9") and "Traceback" not in stderr
