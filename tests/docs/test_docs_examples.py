"""Every code example in the documentation runs against real servers, so the guide cannot rot.

The conventions (which blocks run, how, and the ``<!-- doctest: ... -->`` comments) are in ``doc_blocks``; each page
runs in its own process (``run_page``), its Python blocks in order in one namespace, its ``agent-cache`` commands
against the same server.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent_cache.embedded import EmbeddedCluster
from tests.docs.doc_blocks import ROOT, blocks, needs_cluster, pages, rewrite_connections
from tests.servers import ServerHandle

RUNNABLE = ("python", "shell", "yaml", "file")
MAX_SKIPPED_SHARE = 0.15


def _params() -> list[object]:
    params = []
    for page in pages():
        kinds = {block.kind for block in blocks(page)}
        if not kinds & set(RUNNABLE):
            continue
        marks = [pytest.mark.valkey, *([pytest.mark.cluster] if needs_cluster(page) else [])]
        params.append(pytest.param(page, marks=marks, id=str(page.relative_to(ROOT))))
    return params


async def run_page(page: Path, url: str, cluster: str | None, workdir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.docs.run_page", str(page), "--url", url, "--workdir", str(workdir)]
    if cluster:
        command += ["--cluster", cluster]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_CACHE_")} | {"PYTHONPATH": str(ROOT)}
    return await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.parametrize("page", _params())
async def test_page_examples_run(
    page: Path, valkey_client: object, valkey_server: ServerHandle, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    cluster = None
    if needs_cluster(page):
        nodes: EmbeddedCluster = request.getfixturevalue("valkey_cluster")
        host, port = nodes.startup_nodes[0]
        cluster = f"{host}:{port}"
    done = await run_page(page, valkey_server.url, cluster, tmp_path)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    ran = [line for line in done.stdout.splitlines() if line.startswith("ok ")]
    expected = [block for block in blocks(page) if block.kind in RUNNABLE]
    assert len(ran) == len(expected)


def test_skipped_examples_are_few_and_say_why() -> None:
    code_blocks = [b for page in pages() for b in blocks(page) if b.kind in ("python", "shell", "skip")]
    skipped = [b for b in code_blocks if b.kind == "skip"]
    for block in skipped:
        assert len(block.argument) >= 15, f"{block.where}: a skipped example needs a reason, got {block.argument!r}"
    assert len(skipped) <= MAX_SKIPPED_SHARE * len(code_blocks), [f"{b.where}: {b.argument}" for b in skipped]


def test_directives_are_known() -> None:
    for page in pages():
        for block in blocks(page):
            assert block.directive in ("", "skip", "file"), f"{block.where}: unknown doctest directive"
            if block.directive == "file":
                assert block.argument and "/" not in block.argument, f"{block.where}: file needs a plain name"


@pytest.mark.valkey
async def test_a_broken_example_fails_with_its_page_and_line(valkey_server: ServerHandle, tmp_path: Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text(
        '# A page\n\n```python\nimport valkey.asyncio as valkey\nclient = valkey.Valkey(host="localhost", '
        "port=6379)\nassert await client.ping()\n```\n\ntext\n\n```python\nvalue = 1\nassert value == 2\n```\n"
    )
    done = await run_page(page, valkey_server.url, None, tmp_path)
    assert done.returncode == 1
    assert f"ok {page}:4 python" in done.stdout
    assert f"FAILED {page}:12 (python)" in done.stdout and f'File "{page}", line 13' in done.stdout


@pytest.mark.valkey
async def test_a_command_with_the_wrong_exit_code_fails(valkey_server: ServerHandle, tmp_path: Path) -> None:
    page = tmp_path / "commands.md"
    page.write_text(
        "```bash\nagent-cache stats --name nothing_here   # exits 3\nagent-cache stats --name nothing_here\n```\n"
    )
    done = await run_page(page, valkey_server.url, None, tmp_path)
    assert done.returncode == 1
    assert f"{page}:3: `agent-cache stats --name nothing_here` exited 3, expected 0" in done.stdout


def test_connections_are_rewritten_to_the_test_servers() -> None:
    code = 'Valkey(host="localhost", port=6379); from_url("valkey://localhost:6379/0"); C(host="localhost", port=7000)'
    assert rewrite_connections(code, ("127.0.0.1", 1111), ("127.0.0.1", 2222)) == (
        'Valkey(host="127.0.0.1", port=1111); from_url("valkey://127.0.0.1:1111/0"); C(host="127.0.0.1", port=2222)'
    )


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip()).replace("`", "").lower()
        anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
