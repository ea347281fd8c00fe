"""The generated parts of the Helm chart: CRDs, PrometheusRule, dashboards, values, schema, Chart.yaml, README.

The hand-written templates (Deployment, RBAC, Service, ServiceMonitor, dashboards ConfigMap, NOTES) live beside them in
``charts/agent-cache-operator/templates``; everything that copies a definition from code is generated here.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from agent_cache_operator.bundle import DEFAULT_THRESHOLDS
from agent_cache_operator.crd import build_crd

from . import rules
from .formats import HEADER, ROOT, to_json, to_yaml

CHART = "charts/agent-cache-operator"
TPL_HEADER = f"{{{{- /* {HEADER} */}}}}\n"
THRESHOLDS_PATH = ".Values.prometheusRule.thresholds"

THRESHOLD_HELP = {
    "llmHitRateMin": "AgentCacheLlmHitRateLow: LLM hit rate (0-1) below which the alert fires",
    "toolHitRateMin": "AgentCacheToolHitRateLow: tool tier hit rate (0-1) below which the alert fires",
    "toolDisableBelow": "AgentCacheToolShouldBeDisabled: per-tool hit rate (0-1) below which caching it is wasted",
    "latencyP99MaxSeconds": "AgentCacheLatencyHigh: p99 of an operation above this many seconds",
    "errorRatioMax": "AgentCacheErrorRateHigh: share (0-1) of failing operations above which the alert fires",
    "expectedMinRequestsPerSecond": "AgentCacheNoTraffic: lookups per second below which a cache counts as idle "
    "(0 disables the alert)",
}


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version: str = tomllib.load(handle)["project"]["version"]
    return version


def kopf_peering_crd(*, namespaced: bool = False) -> dict[str, Any]:
    """Kopf's peering CRD (kopf.dev/v1): the replicas' keep-alives live in its objects' status.

    ClusterKopfPeering for an operator watching every namespace; KopfPeering (one object in each watched namespace)
    for one started with --namespace, as the chart's watchNamespaces does."""
    kind = "KopfPeering" if namespaced else "ClusterKopfPeering"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.lower()}s.kopf.dev"},
        "spec": {
            "scope": "Namespaced" if namespaced else "Cluster",
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": f"{kind.lower()}s", "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                        }
                    },
                }
            ],
        },
    }


_HELM_ACTION = re.compile(r"\{\{|\}\}")


def helm_escape(text: str) -> str:
    """Make Prometheus' own ``{{ ... }}`` templates pass through Helm untouched."""
    return _HELM_ACTION.sub(lambda match: "{{`" + match.group() + "`}}", text)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def crd_template() -> str:
    documents = []
    for crd in [build_crd()]:
        text = helm_escape(to_yaml(crd))
        keep = (
            "metadata:\n"
            "  {{- if .Values.crds.keep }}\n"
            "  annotations:\n"
            "    # helm uninstall leaves the CRD (and so every AgentCache) in place.\n"
            "    helm.sh/resource-policy: keep\n"
            "  {{- end }}\n"
        )
        documents.append(text.replace("metadata:\n", keep, 1))
    return TPL_HEADER + "{{- if .Values.crds.install }}\n" + "---\n".join(documents) + "{{- end }}\n"


def _threshold_token(key: str) -> str:
    return f"@@threshold:{key}@@"


def _rules_yaml(rule_list: list[dict[str, Any]], gates: dict[str, str | None]) -> str:
    out = []
    for rule in rule_list:
        text = helm_escape(to_yaml([rule]))
        gate = gates.get(rule.get("alert", ""))
        if gate:
            text = f"{{{{- if gt (float64 {THRESHOLDS_PATH}.{gate}) 0.0 }}}}\n{text}{{{{- end }}}}\n"
        out.append(text)
    return "".join(out)


def prometheusrule_template() -> str:
    scope = rules.Scope("", _threshold_token)
    gates = {alert.name: alert.gate for alert in rules.ALERTS}
    operator = _rules_yaml([a.rule(scope) for a in rules.OPERATOR_ALERTS], gates)
    recording = _rules_yaml(rules.recording_rules(), gates)
    cache = _rules_yaml(rules.cache_alert_rules(scope, None), gates)
    body = (
        "- name: agent-cache-operator.alerts\n  rules:\n"
        + _indent(operator, 2)
        + "- name: agent-cache.rules\n  rules:\n"
        + _indent(recording, 2)
        + "{{- if .Values.prometheusRule.cacheAlerts }}\n"
        + "- name: agent-cache.alerts\n  rules:\n"
        + _indent(cache, 2)
        + "{{- end }}\n"
    )
    body = re.sub(r"@@threshold:(\w+)@@", lambda m: f"{{{{ {THRESHOLDS_PATH}.{m.group(1)} }}}}", body)
    head = (
        "{{- if .Values.prometheusRule.enabled }}\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        '  name: {{ include "agent-cache-operator.fullname" . }}\n'
        "  namespace: {{ .Release.Namespace }}\n"
        "  labels:\n"
        '    {{- include "agent-cache-operator.labels" . | nindent 4 }}\n'
        "    {{- with .Values.prometheusRule.additionalLabels }}\n"
        "    {{- toYaml . | nindent 4 }}\n"
        "    {{- end }}\n"
        "spec:\n"
        "  groups:\n"
    )
    return TPL_HEADER + head + _indent(body, 4) + "{{- end }}\n"


def chart_yaml() -> str:
    version = project_version()
    return YAML_HEADER_TEXT + to_yaml(
        {
            "apiVersion": "v2",
            "name": "agent-cache-operator",
            "description": "The agent-cache operator: AgentCache resources become live cache configuration in Valkey, "
            "with per-cache Grafana dashboards and Prometheus alerts.",
            "type": "application",
            "version": version,
            "appVersion": version,
            # CRD validation rules (CEL) with transition rules are GA from 1.29.
            "kubeVersion": ">=1.29.0-0",
            "keywords": ["agent-cache", "valkey", "llm", "cache", "operator", "kopf"],
            "annotations": {"category": "Database"},
        }
    )


YAML_HEADER_TEXT = f"# {HEADER}\n"


def values_yaml() -> str:
    thresholds = "".join(
        f"    # {THRESHOLD_HELP[key]}.\n    {key}: {value!r}\n" for key, value in DEFAULT_THRESHOLDS.items()
    )
    return YAML_HEADER_TEXT + VALUES_TEMPLATE.replace("@@THRESHOLDS@@\n", thresholds)


VALUES_TEMPLATE = """\
# Values of the agent-cache-operator chart. values.schema.json validates them.

image:
  # The image `./dev image` builds from the repository's Dockerfile (agent-cache-operator:<appVersion>): load it into
  # kind (`kind load docker-image agent-cache-operator:<appVersion>`), or push it to your registry and set this.
  repository: agent-cache-operator
  # Defaults to the chart's appVersion.
  tag: ""
  # IfNotPresent: a kind node uses the loaded image and never pulls it.
  pullPolicy: IfNotPresent
imagePullSecrets: []
nameOverride: ""
fullnameOverride: ""

# More than one replica needs peering (on by default): the oldest replica works, the others wait and the next oldest
# takes over when it stops (peering.priority auto).
replicaCount: 1
# Extra arguments (e.g. --verbose) and environment variables for the operator container. To watch only some
# namespaces use watchNamespaces, which the RBAC and the peering objects follow (--namespace here would not).
extraArgs: []
extraEnv: []

crds:
  # Install and upgrade the AgentCache CRD with the chart (templates/crds.yaml). Set false when CRDs are managed
  # elsewhere: then apply manifests/crds.yaml yourself before installing or upgrading. (Kopf's peering CRDs,
  # ClusterKopfPeering and KopfPeering, are in crds/: Helm installs them once and never upgrades them; --skip-crds
  # leaves them out.)
  install: true
  # Keep the CRDs on helm uninstall, so deleting the release never deletes AgentCaches.
  keep: true

serviceAccount:
  create: true
  # Defaults to the release's full name.
  name: ""
  annotations: {}

rbac:
  # Only what the operator needs (see templates/rbac.yaml): a ClusterRole, or Roles with watchNamespaces.
  create: true

# Namespaces the operator watches (exact names). Empty: every namespace, with a ClusterRole. Named: a Role in each
# (the operator can read Secrets there only) and the operator watches those namespaces alone.
watchNamespaces: []

peering:
  # Kopf peering: the replicas keep each other alive in a ClusterKopfPeering (a KopfPeering in each of
  # watchNamespaces) and only one works. Off: standalone, for one replica only.
  enabled: true
  # Name of the peering object; defaults to the release's full name.
  name: ""
  # The highest priority works and the others pause; equal priorities pause every replica. auto: from each replica's
  # start time, so the oldest works. An integer is for replicaCount 1 only (e.g. to outrank another operator).
  priority: auto
  # Seconds a replica killed without a goodbye (node lost, OOM) still counts as working: a standby takes over after
  # at most this long. A replica that stops normally hands over at once.
  lifetime: 60

# The image runs as this non-root user; the root filesystem is read-only and every capability is dropped.
securityContext:
  runAsUser: 10001
  runAsGroup: 10001

resources:
  requests:
    cpu: 50m
    memory: 128Mi
  limits:
    cpu: 500m
    memory: 256Mi

livenessProbe:
  # The operator serves /healthz on this port.
  port: 8080
  initialDelaySeconds: 15
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3

metrics:
  # The operator's Prometheus metrics (agent_cache_operator_*) on this port, path /metrics.
  port: 9090
  serviceMonitor:
    # A ServiceMonitor (prometheus-operator) for the metrics Service.
    enabled: false
    interval: 30s
    # kube-prometheus-stack selects ServiceMonitors by its release label, e.g. release: kube-prometheus-stack.
    additionalLabels: {}

prometheusRule:
  # A PrometheusRule with the operator's alerts and the recording rules (prometheus-operator).
  enabled: false
  # Also the cache alerts for every cache Prometheus scrapes, with the thresholds below. AgentCaches get their own
  # per-cache alerts from spec.monitoring.alerts; enable this for caches without an AgentCache.
  cacheAlerts: false
  # kube-prometheus-stack selects rules by its release label, e.g. release: kube-prometheus-stack.
  additionalLabels: {}
  thresholds:
@@THRESHOLDS@@

dashboards:
  # A ConfigMap with the overview, tools and operator dashboards for Grafana's dashboard sidecar.
  enabled: false
  # Namespace of the ConfigMap (the sidecar's searchNamespace); defaults to the release namespace.
  namespace: ""
  label: grafana_dashboard
  labelValue: "1"
  additionalLabels: {}
  # e.g. grafana_folder: agent-cache (kube-prometheus-stack's sidecar folderAnnotation).
  annotations: {}

podLabels: {}
podAnnotations: {}
priorityClassName: ""
nodeSelector: {}
tolerations: []
affinity: {}
"""


def _obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def values_schema() -> dict[str, Any]:
    thresholds = {
        key: {"type": "number", "minimum": 0, "description": THRESHOLD_HELP[key]}
        | ({"maximum": 1} if key not in {"latencyP99MaxSeconds", "expectedMinRequestsPerSecond"} else {})
        for key in DEFAULT_THRESHOLDS
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": HEADER,
        "title": "agent-cache-operator values",
        **_obj(
            {
                "image": _obj(
                    {
                        "repository": {"type": "string", "minLength": 1},
                        "tag": {"type": "string"},
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    },
                    required=["repository"],
                ),
                "imagePullSecrets": {"type": "array", "items": {"type": "object"}},
                "nameOverride": {"type": "string"},
                "fullnameOverride": {"type": "string"},
                "replicaCount": {"type": "integer", "minimum": 0},
                "extraArgs": {"type": "array", "items": {"type": "string"}},
                "extraEnv": {"type": "array", "items": {"type": "object"}},
                "crds": _obj({"install": {"type": "boolean"}, "keep": {"type": "boolean"}}),
                "serviceAccount": _obj(
                    {"create": {"type": "boolean"}, "name": {"type": "string"}, "annotations": _STRING_MAP}
                ),
                "rbac": _obj({"create": {"type": "boolean"}}),
                "watchNamespaces": {
                    "type": "array",
                    "uniqueItems": True,
                    "items": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
                },
                "peering": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "name": {"type": "string"},
                        "priority": {"anyOf": [{"type": "integer"}, {"const": "auto"}]},
                        "lifetime": {"type": "integer", "minimum": 1},
                    }
                ),
                "securityContext": _obj(
                    {
                        "runAsUser": {"type": "integer", "minimum": 1},
                        "runAsGroup": {"type": "integer", "minimum": 1},
                    }
                ),
                "resources": {"type": "object"},
                "livenessProbe": _obj(
                    {
                        "port": _PORT,
                        "initialDelaySeconds": {"type": "integer", "minimum": 0},
                        "periodSeconds": {"type": "integer", "minimum": 1},
                        "timeoutSeconds": {"type": "integer", "minimum": 1},
                        "failureThreshold": {"type": "integer", "minimum": 1},
                    }
                ),
                "metrics": _obj(
                    {
                        "port": _PORT,
                        "serviceMonitor": _obj(
                            {
                                "enabled": {"type": "boolean"},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "additionalLabels": _STRING_MAP,
                            }
                        ),
                    }
                ),
                "prometheusRule": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "cacheAlerts": {"type": "boolean"},
                        "additionalLabels": _STRING_MAP,
                        "thresholds": _obj(thresholds, required=list(DEFAULT_THRESHOLDS)),
                    }
                ),
                "dashboards": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "namespace": {"type": "string"},
                        "label": {"type": "string", "minLength": 1},
                        "labelValue": {"type": "string"},
                        "additionalLabels": _STRING_MAP,
                        "annotations": _STRING_MAP,
                    }
                ),
                "podLabels": _STRING_MAP,
                "podAnnotations": _STRING_MAP,
                "priorityClassName": {"type": "string"},
                "nodeSelector": _STRING_MAP,
                "tolerations": {"type": "array", "items": {"type": "object"}},
                "affinity": {"type": "object"},
            }
        ),
    }


def files() -> dict[str, str]:
    out = {
        f"{CHART}/Chart.yaml": chart_yaml(),
        f"{CHART}/values.yaml": values_yaml(),
        f"{CHART}/values.schema.json": to_json(values_schema()),
        f"{CHART}/templates/crds.yaml": crd_template(),
        f"{CHART}/crds/clusterkopfpeerings.yaml": YAML_HEADER_TEXT + to_yaml(kopf_peering_crd()),
        f"{CHART}/crds/kopfpeerings.yaml": YAML_HEADER_TEXT + to_yaml(kopf_peering_crd(namespaced=True)),
        f"{CHART}/templates/prometheusrule.yaml": prometheusrule_template(),
        f"{CHART}/files/README.md": f"<!-- {HEADER} -->\n"
        "The dashboards the chart's dashboards ConfigMap ships (`dashboards.enabled`), copied from `dashboards/`.\n",
    }
    return out
