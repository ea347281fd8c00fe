"""``status`` of an AgentCache — conditions, live stats, instances — computed purely.

Conditions follow the Kubernetes API conventions: ``type``, ``status`` (True/False/Unknown), a CamelCase ``reason``,
a human ``message``, ``observedGeneration`` and a ``lastTransitionTime`` that moves only when ``status`` changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from agent_cache import AgentCacheStats
from agent_cache.config import InstanceRecord

ConditionStatus = Literal["True", "False", "Unknown"]

READY = "Ready"
CONFIG_SYNCED = "ConfigSynced"
DASHBOARDS_READY = "DashboardsReady"
ALERTS_READY = "AlertsReady"
CONDITION_ORDER = (READY, CONFIG_SYNCED, DASHBOARDS_READY, ALERTS_READY)


@dataclass(frozen=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str

    @property
    def is_true(self) -> bool:
        return self.status == "True"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None, updates: Iterable[Condition], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """The new ``status.conditions``: updated types replaced, others kept; ``lastTransitionTime`` kept unless the
    status flipped."""
    by_type: dict[str, dict[str, Any]] = {str(c.get("type")): dict(c) for c in existing or []}
    for condition in updates:
        previous = by_type.get(condition.type)
        transitioned = previous is None or previous.get("status") != condition.status
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": now if transitioned or previous is None else previous.get("lastTransitionTime", now),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[condition.type] = entry
    ordered = [by_type.pop(t) for t in CONDITION_ORDER if t in by_type]
    return ordered + [by_type[t] for t in sorted(by_type)]


def changed(existing: Sequence[Mapping[str, Any]] | None, updates: Iterable[Condition]) -> list[Condition]:
    """The updates that differ from the recorded conditions in status, reason or message (worth an Event)."""
    by_type = {str(c.get("type")): c for c in existing or []}
    result = []
    for condition in updates:
        previous = by_type.get(condition.type)
        if previous is None or (previous.get("status"), previous.get("reason"), previous.get("message")) != (
            condition.status,
            condition.reason,
            condition.message,
        ):
            result.append(condition)
    return result


def ready_condition(config: Condition, *others: Condition | None) -> Condition:
    """Ready is the config being live; monitoring problems are reported, but do not make the cache unready."""
    if not config.is_true:
        return Condition(READY, config.status, config.reason, config.message)
    degraded = [c for c in others if c is not None and not c.is_true]
    message = config.message
    if degraded:
        message += "; monitoring incomplete: " + "; ".join(f"{c.type}: {c.message}" for c in degraded)
    return Condition(READY, "True", "Ready", message)


def stats_status(stats: AgentCacheStats) -> dict[str, Any]:
    """``status.stats``: what ``kubectl get`` shows — the hit rates (absent until there is traffic) and the dollars
    saved, rounded to what a column can show. The raw counters are Prometheus' (agent_cache_* metrics)."""
    result: dict[str, Any] = {"costSavedDollars": round(stats.cost_saved_micros / 1_000_000, 2)}
    if stats.llm.total:
        result["llmHitRate"] = round(stats.llm.hit_rate, 4)
    if stats.tool.total:
        result["toolHitRate"] = round(stats.tool.hit_rate, 4)
    return result


def instances_status(records: Sequence[InstanceRecord], version: str) -> dict[str, int]:
    return {"total": len(records), "current": sum(1 for r in records if r.version == version)}


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """Only the top-level status fields that change (None removes one), so an unchanged status writes nothing."""
    current = current or {}
    return {key: value for key, value in desired.items() if current.get(key) != value}


def replacing(current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that makes ``current`` equal ``new``: the keys ``new`` no longer has are removed (None)."""
    gone = {key: None for key in current or {} if key not in new}
    return {**new, **gone}
