"""What ``pip install`` makes of the project: an editable install without setuptools' warnings, and wheels with
both packages, their data files and both commands. Built with setuptools' PEP 517 hooks from a copy of the tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("setuptools")
pytest.importorskip("wheel")

ROOT = Path(__file__).resolve().parents[2]

_BUILD = """
import json, sys, warnings
from setuptools import build_meta
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    name = getattr(build_meta, sys.argv[1])(sys.argv[2])
print(json.dumps({"wheel": name, "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files a build reads, copied with their symlinks (the build writes egg-info next to them)."""
    copy = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for directory in ("library", "operator"):
        shutil.copytree(ROOT / directory, copy / directory, symlinks=True, ignore=ignore)
    return copy


def build(project: Path, hook: str) -> tuple[zipfile.ZipFile, list[str]]:
    out = project.parent / f"{project.name}-{hook}"
    out.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, hook, str(out)], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return zipfile.ZipFile(out / result["wheel"]), result["warnings"]


def test_an_editable_install_is_a_plain_path_entry_without_warnings(project: Path) -> None:
    wheel, warnings = build(project, "build_editable")
    assert [w for w in warnings if "Editable installation" in w or "careful" in w] == []
    pth = [name for name in wheel.namelist() if name.endswith(".pth")]
    assert len(pth) == 1
    assert wheel.read(pth[0]).decode().strip() == str((project / "library").resolve())
    assert (project / "library" / "agent_cache_operator" / "cli.py").is_file()  # importable from that one root


def test_a_wheel_has_both_packages_their_data_and_both_commands(project: Path) -> None:
    wheel, _ = build(project, "build_wheel")
    names = set(wheel.namelist())
    for path in (
        "agent_cache/py.typed",
        "agent_cache/cost_table.json",
        "agent_cache/commands/server.py",
        "agent_cache_operator/py.typed",
        "agent_cache_operator/cli.py",
        "agent_cache_operator/bundle/overview.dashboard.json",
    ):
        assert path in names, path
    entry_points = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "agent-cache = agent_cache.cli:main" in entry_points
    assert "agent-cache-operator = agent_cache_operator.cli:main" in entry_points
