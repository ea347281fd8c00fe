"""Running ``agent-cache`` as a user does: a subprocess on a pipe, or in a pseudo-terminal for the interactive parts.

A module apart from ``conftest.py`` because the test modules import these by name.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

AGENT_CACHE = str(Path(sys.executable).with_name("agent-cache"))

# What a plain pipe gets: no forced colours, no inherited target or cache name.
_DROPPED = {"FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR", "COLUMNS", "LINES"}
PLAIN_ENV = {k: v for k, v in os.environ.items() if k not in _DROPPED and not k.startswith("AGENT_CACHE_")}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _as_in_the_foreground() -> None:
    """SIGINT at its default, as a program started from a terminal has it. Under a shell's ``&`` the tests
    inherit SIGINT ignored, and so would the child (Python then never raises ``KeyboardInterrupt``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_agent_cache(*args: str) -> subprocess.Popen[str]:
    """Start the installed command on pipes, for a test that talks to it while it runs or sends it Ctrl-C."""
    return subprocess.Popen(
        [AGENT_CACHE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=PLAIN_ENV,
        preexec_fn=_as_in_the_foreground,
    )


def agent_cache(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed command on pipes (stdin is /dev/null unless text is given)."""
    return subprocess.run(
        [AGENT_CACHE, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**PLAIN_ENV, **(env or {})},
        check=False,
    )


def _drain(fd: int) -> bytes:
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def run_in_pty(
    *args: str, answer: tuple[str, str] | None = None, timeout: float = 60, columns: int = 160
) -> tuple[int, str]:
    """Run the command on a pseudo-terminal (stdin, stdout and stderr); returns (exit code, raw output).

    ``answer=(prompt, text)`` types ``text`` once ``prompt`` has appeared in the output.
    """
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**PLAIN_ENV, "TERM": "xterm-256color"}
    process = subprocess.Popen(
        [AGENT_CACHE, *args], stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"agent-cache {' '.join(args)} still running after {timeout} s:\n{output!r}")
            ready, _, _ = select.select([primary], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: every writer closed the terminal, the process is gone
                    chunk = b""
                if not chunk:
                    break
                output += chunk
                if answer is not None and answer[0].encode() in strip_ansi(output.decode(errors="replace")).encode():
                    os.write(primary, answer[1].encode())
                    answer = None
            elif process.poll() is not None:
                output += _drain(primary)  # whatever it wrote between the last read and its exit
                break
        return process.wait(timeout=timeout), output.decode(errors="replace")
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
            process.wait()
