"""Fixtures of the observability suite: the real helm, promtool and prometheus binaries, and rendered charts.

helm comes from ``scripts/install-k8s-tools.sh`` (.venv/bin), promtool and prometheus from Debian's ``prometheus``
package (``./dev test`` installs both); a test that needs a missing binary is skipped with the command to run.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agent-cache-operator"

from scripts.bundle_gen.manifests import find_helm, helm_env  # noqa: E402

# Every optional feature of the chart on (what "every feature on" renders and lints).
ALL_FEATURES = [
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.serviceMonitor.additionalLabels.release=kube-prometheus-stack",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "prometheusRule.cacheAlerts=true",
    "--set",
    "prometheusRule.additionalLabels.release=kube-prometheus-stack",
    "--set",
    "prometheusRule.thresholds.expectedMinRequestsPerSecond=1",
    "--set",
    "dashboards.enabled=true",
    "--set",
    "dashboards.additionalLabels.team=platform",
    "--set",
    "replicaCount=2",
]


def _binary(name: str, hint: str) -> str:
    found = shutil.which(name) or (
        str(ROOT / ".venv" / "bin" / name) if (ROOT / ".venv/bin" / name).is_file() else None
    )
    if found is None:
        pytest.skip(f"{name} is not installed ({hint})")
    return found


@pytest.fixture(scope="session")
def helm_bin() -> str:
    try:
        return find_helm()
    except SystemExit:
        pytest.skip("helm is not installed (scripts/install-k8s-tools.sh)")


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    return _binary("promtool", "apt-get install prometheus")


def promtool(binary: str, *args: str, cwd: Path | None = None) -> str:
    """Run promtool; its output, after asserting it succeeded (the failure shows what it printed)."""
    result = subprocess.run([binary, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus", "apt-get install prometheus")


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="session")
def helm(helm_bin: str, helm_home: Path) -> Any:
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [helm_bin, *args], capture_output=True, text=True, env=helm_env(str(helm_home)), check=False, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return run


def render(helm: Any, *args: str, include_crds: bool = True) -> list[dict[str, Any]]:
    crds = ["--include-crds"] if include_crds else []
    out = helm("template", "agent-cache-operator", str(CHART), "--namespace", "agent-cache-system", *crds, *args)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="session")
def default_render(helm: Any) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="session")
def full_render(helm: Any) -> list[dict[str, Any]]:
    return render(helm, *ALL_FEATURES)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


_MARKS = {
    "helm": "helm",
    "default_render": "helm",
    "full_render": "helm",
    "promtool_bin": "prometheus",
    "prometheus_bin": "prometheus",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(_MARKS):
            item.add_marker(_MARKS[fixture])
