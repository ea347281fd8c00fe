"""Guarded imports of provider SDKs: the base package never needs them, and a missing one names its extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from agent_cache._errors import ConfigurationError


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`ConfigurationError` with the ``pip install`` command for ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(f'{what} needs the {extra} SDK: pip install "agent-cache[{extra}]"') from exc
