"""``telemetry.SPANS`` is the catalogue of every span the library opens (the README's span list follows it)."""

from __future__ import annotations

import re
from pathlib import Path

import agent_cache
from agent_cache.telemetry import SPANS

LIBRARY = Path(agent_cache.__file__).parent
# A span opened with a literal name, and every literal that names a tier operation's span (some tiers pick the
# name from a table: ``_SPAN_NAMES[operation]``).
OPENED = re.compile(r"\.span\(\s*\"(agent_cache\.[a-z_.]+)\"")
SPAN_LITERAL = re.compile(r"\"(agent_cache\.(?:(?:llm|tool|session)\.[a-z_]+|stats|flush))\"")


def _named_spans() -> dict[str, str]:
    found: dict[str, str] = {}
    for source in sorted(LIBRARY.rglob("*.py")):
        if source.name == "telemetry.py":
            continue  # the catalogue itself
        text = source.read_text()
        for name in [*OPENED.findall(text), *SPAN_LITERAL.findall(text)]:
            found.setdefault(name, str(source.relative_to(LIBRARY)))
    return found


def test_every_span_the_library_opens_is_in_the_catalogue_and_no_other() -> None:
    named = _named_spans()
    assert len(named) > 10  # the patterns still find the tiers' spans
    missing = {name: where for name, where in named.items() if name not in SPANS}
    assert not missing, f"opened but not in telemetry.SPANS: {missing}"
    assert set(SPANS) <= set(named), f"in telemetry.SPANS but never opened: {set(SPANS) - set(named)}"
