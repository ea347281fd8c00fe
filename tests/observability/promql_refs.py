"""Which metrics and labels a PromQL expression uses, found without the generator's help.

A small scanner, not a PromQL parser: it finds every ``agent_cache_*`` series name with its ``{...}`` matchers, and
every ``by (...)``/``without (...)`` label list, which is all our dashboards and rules use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SERIES = re.compile(r"(?<![\w:])(agent_cache_[a-z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Reference:
    metric: str
    labels: frozenset[str]


def references(expr: str) -> list[Reference]:
    found = []
    for match in SERIES.finditer(expr):
        matchers = match.group(2) or ""
        found.append(
            Reference(
                match.group(1), frozenset(MATCHER.findall(matchers) and [m[0] for m in MATCHER.findall(matchers)])
            )
        )
    return found


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}
