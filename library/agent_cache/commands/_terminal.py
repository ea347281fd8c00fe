"""What every subcommand prints the same way: exit codes, errors, consoles, JSON, numbers and tables.

rich is imported inside the functions that draw, so ``agent-cache --help`` works without the ``cli`` extra.
Colours and progress bars appear only on a terminal (rich decides, and honours ``NO_COLOR``); on a pipe the
tables are plain text and JSON goes to stdout alone, every note to stderr.
"""

from __future__ import annotations

import io
import json
import sys
from enum import IntEnum
from typing import IO, TYPE_CHECKING, Any, cast

from ..demo.report import compact_table, dollars, ttl

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

__all__ = [
    "EXIT_CODES_HELP",
    "CommandError",
    "ExitCode",
    "console",
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


class PlainLines(io.TextIOBase):
    """A pipe's text with the spaces rich pads table rows with removed from the end of every line, so
    ``grep 'x$'`` and diffs of saved reports work. Holds a partial line until its newline (or a flush)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self._stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        if lines:
            self._stream.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._stream.write(self._partial)
            self._partial = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()


def console(*, stderr: bool = False, pipe_width: int | None = PIPE_WIDTH, soft_wrap: bool = False) -> Console:
    """A console that draws for a terminal, or plain lines on a pipe (``pipe_width`` columns; None: rich's 80).

    When the reader of a pipe goes away (``| head``), writing raises ``BrokenPipeError``, which ``cli.main``
    turns into a quiet exit 0; rich's own reaction is a silent exit 1.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    probe = Console(file=stream)
    if probe.is_terminal:
        return _Console(file=stream, highlight=False, soft_wrap=soft_wrap)
    width = probe.width if pipe_width is None else max(probe.width, pipe_width)
    return _Console(file=cast("IO[str]", PlainLines(stream)), highlight=False, soft_wrap=soft_wrap, width=width)


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr): tables and JSON go to stdout, notes and errors to stderr."""
    return console(), console(stderr=True, soft_wrap=True)


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
