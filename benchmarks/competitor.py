"""Install and import the competitor, ``betterdb-agent-cache``, with every phone-home switch off.

The package sends PostHog product analytics unless ``BETTERDB_TELEMETRY`` is ``false``/``0``/``no``/``off``
(checked in ``betterdb_agent_cache/analytics.py`` before ``posthog`` is even imported), and its
``AnalyticsOptions(disabled=True)`` is a second, per-instance switch; we set both. The variable must be set
before the package is imported, so this module sets it at import time and ``load()`` imports lazily.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
from types import ModuleType

PACKAGE = "betterdb-agent-cache"
MODULE = "betterdb_agent_cache"

# Every analytics switch the package reads (analytics.py: _is_opted_out).
os.environ["BETTERDB_TELEMETRY"] = "false"


class CompetitorUnavailableError(RuntimeError):
    pass


def installed_version() -> str | None:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_installed(spec: str = PACKAGE, *, install: bool = True) -> str:
    """The installed version, after ``pip install``-ing ``spec`` into this interpreter if it is missing."""
    version = installed_version()
    if version is not None:
        return version
    if not install:
        raise CompetitorUnavailableError(f"{PACKAGE} is not installed (run: {sys.executable} -m pip install {spec})")
    print(f"installing {spec} into {sys.prefix} ...", file=sys.stderr, flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CompetitorUnavailableError(f"pip install {spec} failed:\n{result.stdout}{result.stderr}")
    importlib.invalidate_caches()
    version = installed_version()
    if version is None:
        raise CompetitorUnavailableError(f"pip install {spec} succeeded but {PACKAGE} is still not importable")
    return version


def load() -> tuple[ModuleType, ModuleType]:
    """``(betterdb_agent_cache, betterdb_agent_cache.types)``, imported with analytics disabled."""
    if os.environ.get("BETTERDB_TELEMETRY") != "false":  # pragma: no cover - someone changed it after import
        raise CompetitorUnavailableError("BETTERDB_TELEMETRY must be 'false' before the competitor is imported")
    package = importlib.import_module(MODULE)
    types = importlib.import_module(f"{MODULE}.types")
    analytics = importlib.import_module(f"{MODULE}.analytics")
    if not analytics._is_opted_out():
        raise CompetitorUnavailableError("the competitor's analytics opt-out is not in effect")
    return package, types
