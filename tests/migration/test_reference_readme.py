"""betterdb-agent-cache 0.12.0's README examples run on agent-cache with only the import lines changed.

``run_reference_readme`` runs them in a fresh process per package, each on its own empty Valkey: ours with
the imports rewritten, the reference as published (the control). The examples that do not run, and why, are in
docs/migrating.md ("The reference README's examples"); ``FAILING`` must match it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from agent_cache.embedded import EmbeddedValkey
from tests.docs.doc_blocks import ROOT

pytestmark = [pytest.mark.valkey, pytest.mark.slow]

# Example (README heading#n) → the exception it raises, per package. Anything else must run.
FAILING = {
    "ours": {
        "LlamaIndex#1": "AgentCacheUsageError",  # prepare_params(messages): the model is part of the key here
        "LangGraph#1": "ValueError",  # the README's graph has no edge from START, in either package
    },
    "reference": {
        "LLM cache#1": "ValkeyCommandError",  # its client is reused after asyncio.run closed the Quick start's loop
        "OpenAI Agents SDK#2": "TypeError",  # the Agents SDK refuses its CachedModel as an Agent's model
        "LangGraph#1": "ValueError",
    },
}


@dataclass
class Run:
    ran: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, object] = field(default_factory=dict)
    contacted: list[str] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""


def _run(package: str) -> Run:
    server = EmbeddedValkey().start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_CACHE_", "OPENAI_"))}
        done = subprocess.run(
            [sys.executable, "-m", "tests.migration.run_reference_readme", "--package", package, "--url", server.url],
            cwd=ROOT,
            env=env | {"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,  # the README never closes its cache: the process must exit anyway
            check=False,
        )
    finally:
        server.stop()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    run = Run(stdout=done.stdout, stderr=done.stderr)
    for line in done.stdout.splitlines():
        verb, *fields = line.split("\t")
        if verb == "ok":
            run.ran.append(fields[0])
        elif verb == "error":
            run.errors[fields[0]] = fields[2]
        elif verb == "value":
            run.values[fields[0]] = json.loads(fields[1])
        elif verb == "connect":
            run.contacted.append(fields[0])
    return run


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Run]]:
    yield {package: _run(package) for package in ("ours", "reference")}


def test_the_readme_examples_run_on_agent_cache_with_only_the_imports_changed(runs: dict[str, Run]) -> None:
    ours = runs["ours"]
    assert ours.errors == FAILING["ours"], ours.stdout
    assert len(ours.ran) + len(ours.errors) >= 20, "fewer README examples than 0.12.0 has: the extraction broke"


def test_the_control_run_fails_where_docs_say_the_reference_does(runs: dict[str, Run]) -> None:
    reference = runs["reference"]
    assert reference.errors == FAILING["reference"], reference.stdout
    assert sorted(reference.ran + list(reference.errors)) == sorted(runs["ours"].ran + list(runs["ours"].errors))


def test_the_examples_get_the_reference_answers(runs: dict[str, Run]) -> None:
    ours, reference = runs["ours"].values, runs["reference"].values
    for name in ("intent", "all_fields", "deleted", "existed"):
        assert ours[name] == reference[name], name
    assert ours["intent"] == "book_flight"


def test_the_examples_count_what_the_reference_counts(runs: dict[str, Run]) -> None:
    """Counts buffered in a loop that ``asyncio.run`` then closes are written at its shutdown, as the
    reference writes each at once. Two documented differences: the reference's 2nd LLM lookup fails, and
    its ``get_all`` is no session read (ours is: docs/migrating.md)."""
    ours, reference = runs["ours"].values["stats"], runs["reference"].values["stats"]
    assert isinstance(ours, dict) and isinstance(reference, dict)
    for part in ("tool", "per_tool"):
        assert ours[part] == reference[part], part
    get_all_calls = 1  # the README's Session state section
    assert ours["session"] == {**reference["session"], "reads": reference["session"]["reads"] + get_all_calls}


def test_neither_package_reaches_beyond_loopback(runs: dict[str, Run]) -> None:
    # The reference with BETTERDB_TELEMETRY=false, ours always: no analytics, no DNS lookup, nothing.
    for run in runs.values():
        assert run.contacted == []
        assert run.values["posthog_loaded"] is False
