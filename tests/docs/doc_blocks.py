"""The code examples of the Markdown documentation, and how each one is checked.

Every page under ``docs/`` and the README is a script: its fenced blocks run in order, in one process per page.

* ```` ```python ```` blocks share one namespace per page (later snippets use what earlier ones defined) and may
  use top-level ``await``, as in ``python -m asyncio``; one event loop serves the whole page.
* ```` ```bash ```` (``sh``, ``shell``) blocks whose first command is ``agent-cache`` (possibly after ``VAR=value``
  assignments) run line by line, each in its own ``bash -c``; a line
  ending in a comment like ``# exits 3`` must exit 3, every other line 0. ``$AGENT_CACHE_URL`` points the commands
  at the test server. ```` ```console ```` blocks are transcripts and never run.
* ```` ```yaml ```` blocks with ``kind: AgentCache`` are read as ``agent-cache config apply`` reads them.
* Connections: ``localhost:6379`` (or ``host="localhost", port=6379``) is the test's standalone Valkey and
  ``localhost:7000`` a node of its Valkey Cluster.

An HTML comment on the line before a block changes what happens to it:

* ``<!-- doctest: skip: REASON -->`` — not run; the reason is required (e.g. it needs an API key).
* ``<!-- doctest: file NAME -->`` — the block is not run but written to ``NAME`` in the page's working directory,
  for the commands after it (``agent-cache config apply -f NAME``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = frozenset({"bash", "sh", "shell"})

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doctest:\s*(?P<verb>\w+)\s*:?\s*(?P<argument>.*?)\s*-->\s*$")
_AGENT_CACHE = re.compile(r"(?:\w+=\S*\s+)*agent-cache\b")  # optionally after VAR=value assignments
_EXPECTED_EXIT = re.compile(r"#.*\bexits?\s+(\d+)")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    """1-based line of the first code line (after the opening fence)."""
    language: str
    code: str
    directive: str = ""
    argument: str = ""

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"

    @property
    def kind(self) -> str:
        """What the suite does with it: python, shell, yaml, file, skip or text (not code to check)."""
        if self.directive in ("skip", "file"):
            return self.directive
        if self.language == "python":
            return "python"
        if self.language in SHELL_LANGUAGES and self.commands() and _AGENT_CACHE.match(self.commands()[0][1]):
            return "shell"
        if self.language in ("yaml", "yml") and re.search(r"^kind:\s*AgentCache\s*$", self.code, re.M):
            return "yaml"
        return "text"

    def commands(self) -> list[tuple[int, str]]:
        """(line, command) for each logical command line, continuations joined, comments and blanks left out."""
        commands: list[tuple[int, str]] = []
        pending = ""
        start = 0
        for offset, raw in enumerate(self.code.splitlines()):
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if not pending:
                start = self.line + offset
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            commands.append((start, pending + line))
            pending = ""
        return commands


def expected_exit(command: str) -> int:
    match = _EXPECTED_EXIT.search(command)
    return int(match.group(1)) if match else 0


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a page, with the doctest directive on the line before it, if any."""
    lines = page.read_text().splitlines()
    found = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening.group("fence")
        body_start = index + 1
        end = body_start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        indent = len(opening.group("indent"))
        code = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[body_start:end])
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        directive = _DIRECTIVE.match(previous)
        found.append(
            Block(
                page,
                body_start + 1,
                opening.group("info").lower(),
                code + "\n",
                directive.group("verb") if directive else "",
                directive.group("argument") if directive else "",
            )
        )
        index = end + 1
    return found


def rewrite_connections(code: str, standalone: tuple[str, int], cluster: tuple[str, int] | None) -> str:
    """Point the examples' ``localhost:6379`` / ``localhost:7000`` at the test's servers."""
    targets = {"6379": standalone, **({"7000": cluster} if cluster else {})}
    ports = "|".join(targets)

    def keyword(match: re.Match[str]) -> str:
        host, port = targets[match.group("port")]
        return f'{match.group("before")}"{host}"{match.group("between")}{port}'

    def address(match: re.Match[str]) -> str:
        host, port = targets[match.group("port")]
        return f"{host}:{port}"

    code = re.sub(
        rf'(?P<before>host\s*=\s*)"localhost"(?P<between>\s*,\s*port\s*=\s*)(?P<port>{ports})\b', keyword, code
    )
    return re.sub(rf"\blocalhost:(?P<port>{ports})\b", address, code)


def needs_cluster(page: Path) -> bool:
    return any(
        re.search(r"localhost:7000|port\s*=\s*7000", block.code) for block in blocks(page) if block.kind != "skip"
    )
