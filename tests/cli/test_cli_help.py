"""``--help`` explains every option of the operator commands with an example, and works without the cli extra."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from agent_cache.cli import build_parser
from tests.cli.running import agent_cache

OPERATOR_COMMANDS = ("stats", "top", "tools", "invalidate", "config", "caches", "flush", "export", "import")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands() -> dict[str, argparse.ArgumentParser]:
    top = _subparsers(build_parser())
    found = {}
    for name in OPERATOR_COMMANDS:
        nested = _subparsers(top[name])
        found.update({f"{name} {sub}": parser for sub, parser in nested.items()} if nested else {name: top[name]})
    return found


COMMANDS = _commands()
LOCAL_COMMANDS = {name: _subparsers(build_parser())[name] for name in ("demo", "server", "explain")}
"""Commands with no connection options: they start their own server, or (explain) need none."""


@pytest.mark.parametrize("command", sorted(COMMANDS.keys() | LOCAL_COMMANDS.keys()))
def test_every_option_has_an_example(command: str) -> None:
    parser = {**COMMANDS, **LOCAL_COMMANDS}[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        help_text = (action.help or "").lower()
        assert "e.g." in help_text, f"agent-cache {command} {action.option_strings}: {action.help}"
    assert parser.epilog and "examples:" in parser.epilog and "exit codes" in parser.epilog, command


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_runs(command: str) -> None:
    done = agent_cache(*command.split(), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: agent-cache {command}")
    assert "--password-env VAR" in done.stdout and "--url URL" in done.stdout


def test_the_command_list_and_exit_codes() -> None:
    done = agent_cache("--help")
    assert done.returncode == 0
    for command in OPERATOR_COMMANDS:
        assert f"\n    {command}" in done.stdout
    assert "3 nothing found / nothing to do" in done.stdout


def test_help_needs_no_cli_extra_and_running_names_it() -> None:
    script = (
        "import sys; sys.modules['rich'] = None; sys.modules['yaml'] = None; from agent_cache.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    help_text = subprocess.run(
        [sys.executable, "-c", script, "stats", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert help_text.returncode == 0 and "usage: agent-cache stats" in help_text.stdout
    run = subprocess.run(
        [sys.executable, "-c", script, "stats", "--url", "valkey://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert 'pip install "agent-cache[cli]"' in run.stderr and "Traceback" not in run.stderr
