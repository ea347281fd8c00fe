"""Every extra of betterdb-agent-cache 0.12.0 exists here and installs what it installed there.

A user's ``pip install "betterdb-agent-cache[x]"`` becomes ``pip install "agent-cache[x]"``: pip only warns about
an unknown extra, so a missing one would install without the SDK and fail later, at import.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.docs.doc_blocks import ROOT

REFERENCE = "betterdb-agent-cache"
NOT_FOR_USERS = {"dev"}  # the reference's own test tools
NOT_INSTALLED_HERE = {"posthog"}  # its analytics client: agent-cache sends nothing


def _ours() -> dict[str, list[Requirement]]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {canonicalize_name(name): [Requirement(spec) for spec in specs] for name, specs in extras.items()}


def _installs(extra: str, extras: dict[str, list[Requirement]]) -> set[str]:
    """The distributions an extra of ours pulls in, through ``agent-cache[...]`` self-references."""
    found: set[str] = set()
    for requirement in extras[extra]:
        if canonicalize_name(requirement.name) == "agent-cache":
            for inner in requirement.extras:
                found |= _installs(canonicalize_name(inner), extras)
        else:
            found.add(canonicalize_name(requirement.name))
    return found


def _reference() -> dict[str, set[str]]:
    metadata = importlib.metadata.metadata(REFERENCE)
    extras: dict[str, set[str]] = {canonicalize_name(name): set() for name in metadata.get_all("Provides-Extra") or []}
    for spec in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(spec)
        for name in extras:
            if requirement.marker is not None and requirement.marker.evaluate({"extra": name}):
                extras[name].add(canonicalize_name(requirement.name))
    return extras


def test_every_reference_extra_installs_the_same_integrations_here() -> None:
    ours = _ours()
    for extra, installs in _reference().items():
        if extra in NOT_FOR_USERS:
            continue
        assert extra in ours, f'pip install "agent-cache[{extra}]" would install no {sorted(installs)}'
        missing = installs - NOT_INSTALLED_HERE - _installs(extra, ours)
        assert not missing, f"agent-cache[{extra}] lacks {sorted(missing)}"


def test_the_analytics_extra_installs_nothing() -> None:
    assert _installs("analytics", _ours()) == set()


def test_the_spelling_in_the_reference_readme_works() -> None:
    readme = str(importlib.metadata.metadata(REFERENCE).get_payload())  # type: ignore[attr-defined]
    spelled = set(re.findall(r'pip install "betterdb-agent-cache\[([\w-]+)\]"', readme))
    assert "openai_agents" in spelled
    assert {canonicalize_name(extra) for extra in spelled} <= set(_ours())
