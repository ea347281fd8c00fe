"""``agent-cache-operator``'s startup: what stops it is one ``error:`` line and exit code 2, never Kopf retrying with a
chained traceback every minute; and the peering priority that lets several replicas run."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_cache._local_server import pick_port
from tests.operator.conftest import OPERATOR
from tests.operator.emulator import write_kubeconfig

pytest.importorskip("kopf")

from agent_cache_operator.cli import auto_priority, parser


def run_operator(*args: str, home: Path, kubeconfig: str | None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, outside any cluster; the timeout catches an operator that keeps retrying."""
    if OPERATOR is None:
        pytest.skip('the agent-cache-operator command is not installed: pip install -e ".[dev]"')
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KUBERNETES_", "KUBECONFIG"))}
    env.update({"HOME": str(home), "PYTHONUNBUFFERED": "1"})
    if "--metrics-port" not in args:  # the defaults (9090, 8080) may be taken on a test machine
        args = ("--metrics-port", "0", "--liveness-port", "0", *args)
    if kubeconfig is not None:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run([OPERATOR, *args], capture_output=True, text=True, env=env, timeout=30, check=False)


def assert_one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    for part in expected:
        assert part in line, line
    return line


def test_no_credentials_is_one_error_line(tmp_path: Path) -> None:
    line = assert_one_error_line(
        run_operator(home=tmp_path, kubeconfig=None),
        "no Kubernetes credentials",
        "not in a pod with a service account",
        "KUBECONFIG is not set and ~/.kube/config does not exist",
    )
    assert "set KUBECONFIG" in line
    assert_one_error_line(
        run_operator(home=tmp_path, kubeconfig=str(tmp_path / "nowhere")),
        f"KUBECONFIG names {tmp_path / 'nowhere'}, which does not exist",
    )


def test_an_unusable_kubeconfig_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: [\n")
    assert_one_error_line(run_operator(home=tmp_path, kubeconfig=str(broken)), f"the kubeconfig {broken} is unusable")
    empty = tmp_path / "empty"
    empty.write_text("apiVersion: v1\nkind: Config\n")
    assert_one_error_line(run_operator(home=tmp_path, kubeconfig=str(empty)), f"the kubeconfig {empty} is unusable")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("option", ["--metrics-port", "--liveness-port"])
def test_a_taken_port_is_one_error_line(tmp_path: Path, taken_port: int, option: str) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, f"http://127.0.0.1:{pick_port(set())}")  # never contacted: ports are checked first
    other = "--liveness-port" if option == "--metrics-port" else "--metrics-port"
    result = run_operator(
        "--standalone", "--bind-address", "127.0.0.1", option, str(taken_port), other, "0",
        home=tmp_path, kubeconfig=str(kubeconfig),
    )  # fmt: skip
    what = "metrics" if option == "--metrics-port" else "liveness"
    assert_one_error_line(result, f"cannot serve {what}", f"127.0.0.1:{taken_port}")


def test_an_api_server_that_is_down_or_refuses_the_credentials_is_one_error_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    down = f"http://127.0.0.1:{pick_port(set())}"
    write_kubeconfig(kubeconfig, down)
    assert_one_error_line(
        run_operator(home=tmp_path, kubeconfig=str(kubeconfig)), f"cannot reach the Kubernetes API at {down}: [Errno"
    )

    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        write_kubeconfig(kubeconfig, url)
        try:
            result = run_operator(home=tmp_path, kubeconfig=str(kubeconfig))
        finally:
            server.shutdown()
    assert_one_error_line(result, f"the Kubernetes API at {url} refused the credentials (401 Unauthorized)")


def test_a_bad_priority_is_a_usage_error(tmp_path: Path) -> None:
    result = run_operator("--priority", "high", home=tmp_path, kubeconfig=None)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --priority: expected an integer or 'auto', got 'high'" in result.stderr.splitlines()[-1]


def test_priority_defaults_to_auto_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_CACHE_OPERATOR_PRIORITY", raising=False)
    assert parser().parse_args([]).priority is None
    assert parser().parse_args(["--priority", "-5"]).priority == -5
    monkeypatch.setenv("AGENT_CACHE_OPERATOR_PRIORITY", "Auto")
    assert parser().parse_args([]).priority is None
    monkeypatch.setenv("AGENT_CACHE_OPERATOR_PRIORITY", "7")
    assert parser().parse_args([]).priority == 7


def test_auto_priority_puts_the_oldest_replica_first() -> None:
    started = 1_764_950_400_123_456_789  # ns
    older, newer = auto_priority(started), auto_priority(started + 1_000)
    assert older > newer  # a replica that starts later never outranks a working one
    assert older < 0  # below any explicit priority (0 and up), e.g. an operator run by hand to take over
    assert -(2**63) < auto_priority(2**62) < 0  # within int64, as the API server stores it for centuries yet
    same_microsecond = {auto_priority(started) for _ in range(50)}
    assert len(same_microsecond) > 1  # replicas started together still differ (equal priorities pause everyone)
