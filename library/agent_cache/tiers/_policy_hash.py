"""Reading a policies hash (``{name}:__tool_policies``, ``{name}:__model_policies``), shared by both tiers.

Other programs write these hashes too (BetterDB Monitor, the reference package, ``agent-cache config apply``), so
one malformed field must cost only that field: it keeps the value this instance read before, and is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .._backend import as_text
from .._errors import AgentCacheUsageError

Policy = TypeVar("Policy")


def parse_policy_hash(
    raw: Any, parse: Callable[[str, Any], Policy], previous: Mapping[str, Policy]
) -> tuple[dict[str, Policy], list[str]]:
    """The policies of a hash as ``HGETALL`` returned it (a mapping, or a flat list), each field parsed with
    ``parse(name, value)``, and the problems of those that could not be (each kept at its ``previous`` value)."""
    pairs: Mapping[Any, Any] = raw if isinstance(raw, Mapping) else dict(zip(raw[::2], raw[1::2], strict=True))
    fresh: dict[str, Policy] = {}
    problems: list[str] = []
    for field, value in pairs.items():
        name = as_text(field)
        try:
            fresh[name] = parse(name, value)
        except AgentCacheUsageError as exc:
            problems.append(str(exc))
            if name in previous:
                fresh[name] = previous[name]
    return fresh, problems
