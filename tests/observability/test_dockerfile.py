"""The operator image, without Docker (the CI machines have none): the Dockerfile's build context, the wheel its build
stage makes from exactly that context, its entry point, and that the README, ``./dev image``, scripts/kind-e2e.sh and
the Helm chart agree on the image and the install steps.

The build context is assembled as Docker does it: the Dockerfile's ``COPY`` sources, filtered by ``.dockerignore``
(last matching pattern wins, a pattern matching a parent directory matches the file, ``!`` re-includes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.doc_blocks import ROOT, blocks
from tests.observability.conftest import CHART, render

DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    stage: int
    command: str
    arguments: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), with their stage number."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    parsed: list[Instruction] = []
    stage = -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        command, _, arguments = line.partition(" ")
        if command.upper() == "FROM":
            stage += 1
        parsed.append(Instruction(stage, command.upper(), arguments.strip()))
    return parsed


def copies() -> list[tuple[list[str], str]]:
    """``COPY`` instructions from the build context (not ``--from`` a stage): (sources, destination)."""
    found = []
    for instruction in instructions():
        if instruction.command in {"COPY", "ADD"}:
            words = instruction.arguments.split()
            if any(word.startswith("--from") for word in words):
                continue
            paths = [word for word in words if not word.startswith("--")]
            found.append((paths[:-1], paths[-1]))
    return found


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        assert not pattern.startswith("../"), line
        rules.append((exclude, _regex(pattern)))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exclude, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = exclude
    return not excluded


def context_files(source: str, rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """Files (and symlinks, kept as links) under ``source`` that Docker sends, relative to the repository."""
    root = ROOT / source
    if not root.is_dir() or root.is_symlink():
        return [source] if in_context(source, rules) else []
    found = []
    for directory, subdirectories, files in os.walk(root):
        for name in files + [d for d in subdirectories if (Path(directory) / d).is_symlink()]:
            relative = (Path(directory) / name).relative_to(ROOT).as_posix()
            if in_context(relative, rules):
                found.append(relative)
    return sorted(found)


def test_the_dockerignore_matcher_follows_docker() -> None:
    rules = [(True, _regex("*")), (False, _regex("library")), (True, _regex("**/__pycache__"))]
    assert in_context("library/agent_cache/cli.py", rules)
    assert not in_context("library/agent_cache/__pycache__/cli.cpython-311.pyc", rules)
    assert not in_context("tests/conftest.py", rules)
    assert not in_context("Dockerfile", rules)


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    rules = dockerignore()
    assert copies(), "the Dockerfile copies nothing from the build context"
    for sources, _destination in copies():
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            sent = context_files(source, rules)
            assert sent, f"COPY {source}: .dockerignore leaves it out of the build context"
            if (ROOT / source).is_dir():
                tracked = subprocess.run(
                    ["git", "ls-files", source], cwd=ROOT, capture_output=True, text=True, check=True
                ).stdout.split()
                missing = sorted(set(tracked) - set(sent))
                assert not missing, f"COPY {source}: .dockerignore leaves out tracked files: {missing[:10]}"
    # What no image needs stays out: the virtualenv, git, caches, tests.
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "library/agent_cache/__pycache__/x.pyc"):
        assert not in_context(path, rules), path


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage's /src: what its COPY instructions put there, from the filtered build context."""
    rules = dockerignore()
    workdirs = [i.arguments for i in instructions() if i.command == "WORKDIR" and i.stage == 0]
    assert workdirs, "the build stage sets no WORKDIR"
    src = tmp_path_factory.mktemp("docker") / "src"
    src.mkdir()
    for sources, destination in copies():
        target = src / destination
        for source in sources:
            for relative in context_files(source, rules):
                inside = Path(relative).relative_to(source) if (ROOT / source).is_dir() else Path(Path(relative).name)
                place = (target / inside) if destination.endswith("/") or (ROOT / source).is_dir() else target
                place.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / relative).is_symlink():
                    place.symlink_to(os.readlink(ROOT / relative))
                else:
                    shutil.copy2(ROOT / relative, place)
    return src


_BUILD_WHEEL = """
import json, sys
from setuptools import build_meta
print(json.dumps(build_meta.build_wheel(sys.argv[1])))
"""


def test_the_build_stage_makes_a_wheel_whose_command_is_the_entrypoint(build_context: Path) -> None:
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    runs = " ".join(i.arguments for i in instructions() if i.command == "RUN" and i.stage == 0)
    assert "pip wheel" in runs and "[operator]" in runs  # the wheel, installed with the operator's dependencies
    out = build_context.parent / "wheels"
    out.mkdir()
    built = subprocess.run(
        [sys.executable, "-c", _BUILD_WHEEL, str(out)],
        cwd=build_context, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, f"the build stage's wheel build fails on its context:\n{built.stderr[-3000:]}"
    wheel = zipfile.ZipFile(out / json.loads(built.stdout.strip().splitlines()[-1]))
    names = set(wheel.namelist())
    assert {"agent_cache_operator/cli.py", "agent_cache_operator/bundle/overview.dashboard.json"} <= names
    metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "Provides-Extra: operator" in metadata
    entry_points = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = dict(
        (name.strip(), target.strip())
        for line in entry_points.split("[console_scripts]")[1].split("[")[0].splitlines()
        if "=" in line
        for name, target in [line.split("=", 1)]
    )
    (entrypoint,) = [i.arguments for i in instructions() if i.command == "ENTRYPOINT"]
    command = json.loads(entrypoint)
    assert command[0] in scripts, f"ENTRYPOINT {command[0]} is no console script of the wheel: {scripts}"
    assert scripts[command[0]] == "agent_cache_operator.cli:main"


def _image_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_chart_runs_the_image_dev_image_builds(helm: Any) -> None:
    built = subprocess.run(
        [str(ROOT / "dev"), "image", "--print"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert built == f"{values['image']['repository']}:{chart['appVersion']}"
    container = _image_of(render(helm))
    assert container["image"] == built
    assert container["imagePullPolicy"] == "IfNotPresent"  # a kind node uses the loaded image, never pulls it
    manifests = [doc for doc in yaml.safe_load_all((ROOT / "manifests" / "operator.yaml").read_text()) if doc]
    assert _image_of(manifests)["image"] == built
    # The container runs what the image's entry point runs, as the user and on the ports the image declares.
    (entrypoint,) = [i.arguments for i in instructions() if i.command == "ENTRYPOINT"]
    assert container["command"] == json.loads(entrypoint)
    (user,) = [i.arguments for i in instructions() if i.command == "USER"]
    assert user == f"{values['securityContext']['runAsUser']}:{values['securityContext']['runAsGroup']}"
    (exposed,) = [i.arguments for i in instructions() if i.command == "EXPOSE"]
    assert {int(port) for port in exposed.split()} == {values["livenessProbe"]["port"], values["metrics"]["port"]}


def _positions(text: str, steps: list[str], where: str) -> list[int]:
    positions = []
    for step in steps:
        assert step in text, f"{where} lacks the step {step!r}"
        positions.append(text.index(step))
    return positions


def test_readme_and_kind_e2e_install_in_the_same_order() -> None:
    built = subprocess.run(
        [str(ROOT / "dev"), "image", "--print"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    readme = ROOT / "README.md"
    (install,) = [b.code for b in blocks(readme) if b.language == "bash" and "helm install" in b.code]
    steps = [
        "./dev image",
        f"kind load docker-image {built}",
        "helm install agent-cache-operator charts/agent-cache-operator",
        "kubectl apply -f manifests/examples/agentcache-minimal.yaml",
        "kubectl get agentcaches",
    ]
    positions = _positions(install, steps, "README's install block")
    assert positions == sorted(positions), f"README's install steps are out of order: {install}"
    lines = (ROOT / "scripts" / "kind-e2e.sh").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.lstrip().startswith("#")) + "\n"  # commands, not comments
    script_steps = [
        "image=$(./dev image --print)",
        "\n./dev image\n",
        'kind load docker-image "$image"',
        'helm install "$release" charts/agent-cache-operator',
        "kubectl apply -f manifests/examples/agentcache-minimal.yaml",
        "kubectl wait --for=condition=Ready agentcache/support-bot",
        "kubectl get agentcaches",
        "pytest tests/operator",
    ]
    positions = _positions(script, script_steps, "scripts/kind-e2e.sh")
    assert positions == sorted(positions), "scripts/kind-e2e.sh runs the install steps out of order"
    assert "release=agent-cache-operator\n" in script and "release_namespace=agent-cache\n" in script
    assert "--namespace agent-cache --create-namespace" in install
    shell = shutil.which("bash")
    if shell:
        for path in (ROOT / "scripts" / "kind-e2e.sh", ROOT / "dev"):
            assert subprocess.run([shell, "-n", str(path)], capture_output=True, check=False).returncode == 0, path
