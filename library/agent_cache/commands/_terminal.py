"""What every subcommand prints the same way: exit codes, errors, consoles, JSON, numbers and tables.

rich is imported inside the functions that draw, so ``agent-cache --help`` works without the ``cli`` extra.
Colours and progress bars appear only on a terminal (rich decides, and honours ``NO_COLOR``); on a pipe the
tables are plain text and JSON goes to stdout alone, every note to stderr.
"""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from ..demo.report import compact_table, dollars, ttl

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = [
    "EXIT_CODES_HELP",
    "CommandError",
    "ExitCode",
    "consoles",
    "dollars",
    "literal",
    "percent",
    "print_json",
    "table",
    "ttl",
]


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    """The command failed; ``config diff``: the file differs from the live config."""
    USAGE = 2
    """Bad options, or Valkey could not be reached."""
    NOTHING = 3
    """Nothing found, nothing to do: no such cache, no entries matched."""


EXIT_CODES_HELP = """\
exit codes:
  0  done
  1  the command failed
  2  bad usage, or Valkey unreachable (connection, TLS or authentication error)
  3  nothing found / nothing to do"""


class CommandError(Exception):
    """Ends a command with a one-line ``error: ...`` on stderr and an exit code."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


PIPE_WIDTH = 160
"""Width of tables on a pipe: rich's 80 columns would cut tool and cache names short."""


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr): tables and JSON go to stdout, notes and errors to stderr."""
    from rich.console import Console

    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=max(out.width, PIPE_WIDTH))
    return out, Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def literal(text: str, style: str = "") -> Text:
    """A user-supplied name in a table cell: never read as rich markup (a tool may be called ``[x]``)."""
    from rich.text import Text

    return Text(text, style=style)


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.1%}"


table = compact_table  # the demo's compact style, so a report fits 80 columns on a pipe
