"""Grafana plumbing for the dashboards: panels, variables and dashboards through grafana-foundation-sdk.

Every panel gets a unit, a description and the ``${datasource}`` data source; panel ids are assigned here (the SDK
leaves them unset); the generic queries (hit ratio, quantiles) and the tool recommendation's value mappings (the
thresholds of ``agent_cache.stats.recommend``) are shared by the dashboards.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from agent_cache.stats import DISABLE_BELOW, INCREASE_TTL_ABOVE, LONG_TTL_SECONDS

from .promql import by, series

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
SCOPE = 'namespace=~"$namespace", cache_name=~"$cache_name"'
TOOL_SCOPE = f'{SCOPE}, tool_name=~"$tool_name"'
OPERATOR_SCOPE = 'namespace=~"$namespace"'
TAGS = ["agent-cache"]
RATE = "$__rate_interval"
QUANTILE_NAMES = {"0.5": "p50", "0.95": "p95", "0.99": "p99"}
RANGE = "$__range"


@dataclass
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass
class PanelSpec:
    kind: str  # timeseries | stat | table | bargauge
    title: str
    description: str
    queries: Sequence[Query]
    unit: str
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    mappings: list[model.ValueMapping] = field(default_factory=list)
    transformations: list[model.DataTransformerConfig] = field(default_factory=list)
    overrides: list[tuple[str, list[model.DynamicConfigValue]]] = field(default_factory=list)
    no_value: str | None = None


def _target(query: Query, ref: str) -> gp.Dataquery:
    target = gp.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
    if query.legend:
        target = target.legend_format(query.legend)
    if query.table:
        target = target.format(PromQueryFormat.TABLE).instant()
    elif query.instant:
        target = target.instant()
    else:
        target = target.range()
    return target


def _panel(spec: PanelSpec) -> Any:
    builder: Any
    if spec.kind == "timeseries":
        builder = (
            timeseries.Panel()
            .line_width(1)
            .fill_opacity(10)
            .legend(
                VizLegendOptions()
                .show_legend(True)
                .display_mode(common.LegendDisplayMode.TABLE)
                .placement(common.LegendPlacement.BOTTOM)
                .calcs(["lastNotNull", "max"])
            )
        )
    elif spec.kind == "stat":
        builder = (
            stat.Panel()
            .graph_mode(common.BigValueGraphMode.AREA)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        )
    elif spec.kind == "table":
        builder = table.Panel()
    elif spec.kind == "bargauge":
        builder = (
            bargauge.Panel()
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.GRADIENT)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        )
    else:
        raise ValueError(spec.kind)
    builder = (
        builder.title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
    )
    for index, query in enumerate(spec.queries):
        builder = builder.with_target(_target(query, chr(ord("A") + index)))
    if spec.min is not None:
        builder = builder.min(spec.min)
    if spec.max is not None:
        builder = builder.max(spec.max)
    if spec.mappings:
        builder = builder.mappings(spec.mappings)
    if spec.no_value is not None:
        builder = builder.no_value(spec.no_value)
    for transformation in spec.transformations:
        builder = builder.with_transformation(transformation)
    for name, properties in spec.overrides:
        builder = builder.override_by_name(name, properties)
    return builder


def label_variable(name: str, label: str, description: str, query: str) -> Any:
    """A multi-value variable over a label's values, "All" (``.*``) by default, refreshed with the time range."""
    return (
        gd.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def cache_variables(*, tools: bool = False) -> list[Any]:
    variables: list[Any] = [
        gd.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_variable(
            "namespace",
            "Namespace",
            "Kubernetes namespace of the pods that use the cache (the scrape's namespace label).",
            f"label_values({series('requests_total')}, namespace)",
        ),
        label_variable(
            "cache_name",
            "Cache",
            "The cache's name (AgentCache prefix / the library's `name`).",
            f"label_values({series('requests_total', OPERATOR_SCOPE)}, cache_name)",
        ),
    ]
    if tools:
        variables.append(
            label_variable(
                "tool_name",
                "Tool",
                "Tools cached in the selected caches.",
                f"label_values({series('requests_total', SCOPE, tier='tool')}, tool_name)",
            )
        )
    return variables


def build_dashboard(
    uid: str, title: str, description: str, rows: Sequence[tuple[str, Sequence[PanelSpec]]], variables: list[Any]
) -> dict[str, Any]:
    builder = (
        gd.Dashboard(title)
        .uid(uid)
        .description(f"{description} Generated by scripts/generate.py from agent_cache.telemetry.METRICS; do not edit.")
        .tags(TAGS)
        .editable()
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            gd.DashboardLink("agent-cache")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for variable in variables:
        builder = builder.with_variable(variable)
    for row_title, panels in rows:
        builder = builder.with_row(gd.Row(row_title))
        for spec in panels:
            builder = builder.with_panel(_panel(spec))
    document: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for panel_id, panel in enumerate(document["panels"], start=1):
        panel["id"] = panel_id
    return document


# ── shared query pieces ────────────────────────────────────────────────────────


def hit_ratio(scope: str, labels: Sequence[str], window: str, **matchers: str) -> str:
    """Hits / lookups, 0 (not "no data") when there were lookups and no hit."""
    grouping = by("requests_total", labels) if labels else ""
    hits = f"sum {grouping} (rate({series('requests_total', scope, **matchers, result='hit')}[{window}]))"
    lookups = f"sum {grouping} (rate({series('requests_total', scope, **matchers)}[{window}]))"
    return f"({hits} or 0 * {lookups}) / {lookups}"


def quantile_query(q: str, scope: str, labels: Sequence[str]) -> str:
    buckets = series("operation_duration_seconds", scope, part="bucket")
    return f"histogram_quantile({q}, sum {by('operation_duration_seconds', (*labels, 'le'))} (rate({buckets}[{RATE}])))"


# The codes of ``recommendation_query`` (``agent_cache.stats.recommend``'s three answers).
RECOMMENDATION_MAPPINGS: list[model.ValueMapping] = [
    model.ValueMap(
        options={
            "2": model.ValueMappingResult(text="increase TTL", color="blue", index=0),
            "1": model.ValueMappingResult(text="optimal", color="green", index=1),
            "0": model.ValueMappingResult(text="decrease TTL or disable", color="red", index=2),
        }
    )
]


def recommendation_query(hit_rate: str, ttl: str, labels: tuple[str, ...]) -> str:
    """``agent_cache.stats.recommend`` in PromQL, per ``labels``: 2 = increase the TTL (hit rate above
    INCREASE_TTL_ABOVE and a TTL under LONG_TTL_SECONDS), 1 = optimal (also: that hit rate without a TTL, or
    with a long one), 0 = decrease the TTL or stop caching (hit rate below DISABLE_BELOW)."""
    on = f"on ({', '.join(labels)})"
    return (
        f"(({hit_rate}) > {INCREASE_TTL_ABOVE} and {on} (({ttl}) > 0 < {LONG_TTL_SECONDS})) * 0 + 2"
        f" or (({hit_rate}) >= {DISABLE_BELOW}) * 0 + 1"
        f" or ({hit_rate}) * 0"
    )
