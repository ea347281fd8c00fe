"""The overview dashboard's "Valkey memory and evictions" row.

Every instance of a cache reports the same server figures (from INFO, see ``agent_cache._memory``), so the panels
take the ``max`` per node across instances, never the sum. A cache Valkey evicts from looks like a bad hit rate: the
evictions panel sits next to the memory it explains.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from .grafana import RATE, PanelSpec, Query
from .promql import by, series


def memory_row(scope: str) -> list[PanelSpec]:
    def per_node(suffix: str, inner: str) -> str:
        return f"max {by(suffix, ('node',))} ({inner})"

    used = series("valkey_memory_used_bytes", scope)
    limit = series("valkey_memory_max_bytes", scope)
    evicted = series("valkey_evicted_keys_total", scope)
    expired = series("valkey_expired_keys_total", scope)
    policy = series("valkey_maxmemory_policy_info", scope)
    return [
        PanelSpec(
            "timeseries",
            "Valkey memory used and limit",
            "Memory each Valkey primary uses (INFO used_memory) and its maxmemory (0: no limit, Valkey grows "
            "until the machine runs out). When used reaches the limit, Valkey evicts keys or, under noeviction, "
            "refuses writes.",
            [
                Query(per_node("valkey_memory_used_bytes", used), "used {{node}}"),
                Query(per_node("valkey_memory_max_bytes", limit), "limit {{node}}"),
            ],
            "bytes",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Keys evicted and expired per second",
            "Keys Valkey evicted to stay within maxmemory (entries lost before their TTL: they come back as "
            "misses) and keys whose TTL ran out, per primary. Evictions are the server's, shared by every cache on it.",
            [
                Query(per_node("valkey_evicted_keys_total", f"rate({evicted}[{RATE}])"), "evicted {{node}}"),
                Query(per_node("valkey_expired_keys_total", f"rate({expired}[{RATE}])"), "expired {{node}}"),
            ],
            "ops",
            width=8,
        ),
        PanelSpec(
            "table",
            "maxmemory-policy per node",
            "The eviction policy each primary runs with. noeviction with a limit: writes fail once memory is full "
            "(the operator's MemoryPolicy condition says so); volatile-* policies never evict entries stored "
            "without a TTL.",
            [Query(f"max {by('valkey_maxmemory_policy_info', ('node', 'policy'))} ({policy} == 1)", table=True)],
            "short",
            width=8,
            transformations=[
                model.DataTransformerConfig(
                    id_val="organize",
                    options={
                        "excludeByName": {"Time": True, "Value": True},
                        "renameByName": {"policy": "maxmemory-policy"},
                    },
                )
            ],
        ),
    ]
