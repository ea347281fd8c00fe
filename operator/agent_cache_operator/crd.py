"""The ``AgentCache`` custom resource definition, built in code (manifests and the Helm chart are generated from it).

Why in code: the schema's defaults are also what the operator applies to a spec read from an API server that did not
default it (and what ``agent-cache config apply -f`` users get), so there is one source of truth for every default,
bound and rule. :func:`build_crd` returns the whole ``CustomResourceDefinition``; :data:`OPENAPI_SCHEMA` is its
``openAPIV3Schema`` (structural: every node typed, no unknown fields), and :func:`apply_defaults` applies its
``default`` values the way the API server does.

CEL rules (``x-kubernetes-validations``) carry what OpenAPI cannot say: exactly one of ``valkey.url``/``valkey.host``,
no password inside a URL, the cache-name rule of the library, positive TTLs, and an immutable ``prefix`` (a
transition rule on ``oldSelf``: the prefix is every key's first segment, so changing it would orphan the data).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .bundle import DEFAULT_THRESHOLDS

GROUP = "agentcache.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AgentCache"
PLURAL = "agentcaches"
SINGULAR = "agentcache"
SHORT_NAMES = ("ac", "acache")
CRD_NAME = f"{PLURAL}.{GROUP}"

# The library's cache-name rule (agent_cache._keys.validate_cache_name) for CEL's RE2 `matches`: ':'-separated
# segments of A-Z a-z 0-9 _ . -, each starting with a letter or digit; at most CACHE_NAME_MAX characters, and no
# segment after the first may be a key family (RE2 has no lookahead: those two are rules of their own).
CACHE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)*$"
CACHE_NAME_MAX = 128
RESERVED_SEGMENT_PATTERN = r":(llm|tool|session|checkpoint)(:|$)"
CACHE_NAME_RULE = (
    "1-128 characters from A-Z a-z 0-9 _ . -, optionally in ':'-separated segments (myapp:prod), each starting with "
    "a letter or digit; llm, tool, session and checkpoint cannot follow a ':'"
)
URL_SCHEMES = ("valkey", "valkeys", "redis", "rediss")

# The alert thresholds and their defaults are the observability bundle's (the rules are templated with them).
THRESHOLD_DEFAULTS: dict[str, float] = {key: float(value) for key, value in DEFAULT_THRESHOLDS.items()}
DEFAULT_GRAFANA_INSTANCE_SELECTOR = {"matchLabels": {"dashboards": "grafana"}}

_MAX_KEYS = 1024  # bounds for maps, so the API server can estimate the CEL rules' cost


def _rule(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


def _ttl(description: str) -> dict[str, Any]:
    return {
        "type": "integer",
        "format": "int64",
        "description": description,
        "x-kubernetes-validations": [_rule("self > 0", "must be a positive number of seconds")],
    }


def _string_map(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 1024},
    }


def _secret_key_ref(description: str, default_key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253, "description": "Secret in this namespace."},
            "key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 253,
                "default": default_key,
                "description": f"Key in the Secret's data (default {default_key!r}).",
            },
        },
    }


def _valkey_schema() -> dict[str, Any]:
    schemes = "|".join(URL_SCHEMES)
    return {
        "type": "object",
        "description": "Where the cache lives. Credentials come from Secrets only, never from this spec.",
        "properties": {
            "url": {
                "type": "string",
                "minLength": 1,
                "maxLength": 2048,
                "description": "valkey://, valkeys://, redis:// or rediss:// URL (host, port, optional /db and user; "
                "no password). Mutually exclusive with host.",
            },
            "host": {
                "type": "string",
                "minLength": 1,
                "maxLength": 253,
                "description": "Hostname or IP (e.g. a Service name). Mutually exclusive with url.",
            },
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "Port with host (6379)."},
            "db": {"type": "integer", "minimum": 0, "maximum": 15, "description": "Logical database (0)."},
            "cluster": {
                "type": "boolean",
                "default": False,
                "description": "Valkey Cluster (or a managed cluster-mode service): connect with the cluster client.",
            },
            "passwordSecretRef": _secret_key_ref("Secret holding the password (AUTH).", "password"),
            "usernameSecretRef": _secret_key_ref("Secret holding the ACL username.", "username"),
            "tls": {
                "type": "object",
                "description": "TLS to Valkey (implied by a valkeys:// or rediss:// URL).",
                "properties": {
                    "enabled": {"type": "boolean", "default": False},
                    "caSecretRef": _secret_key_ref("Secret holding the PEM CA bundle to verify the server.", "ca.crt"),
                    "certSecretRef": {
                        "type": "object",
                        "description": "Secret with a client certificate and key (mutual TLS), e.g. kubernetes.io/tls.",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 253},
                            "certKey": {"type": "string", "minLength": 1, "maxLength": 253, "default": "tls.crt"},
                            "keyKey": {"type": "string", "minLength": 1, "maxLength": 253, "default": "tls.key"},
                        },
                    },
                    "insecureSkipVerify": {
                        "type": "boolean",
                        "default": False,
                        "description": "Do not verify the server certificate (testing only).",
                    },
                },
            },
        },
        "x-kubernetes-validations": [
            _rule("has(self.url) != has(self.host)", "set exactly one of valkey.url and valkey.host"),
            _rule(
                f"!has(self.url) || self.url.matches('^({schemes})://')",
                "valkey.url must start with valkey://, valkeys://, redis:// or rediss://",
            ),
            _rule(
                "!has(self.url) || !self.url.matches('^[a-z]+://[^/@]*:[^/@]*@')",
                "valkey.url must not contain a password: use valkey.passwordSecretRef",
            ),
            _rule("!has(self.port) || has(self.host)", "valkey.port goes with valkey.host (put the port in the url)"),
            _rule("!has(self.db) || !self.cluster || self.db == 0", "a Valkey Cluster has only database 0 (valkey.db)"),
        ],
    }


def _monitoring_schema() -> dict[str, Any]:
    thresholds = {
        key: {"type": "number", "minimum": 0, "default": value}
        | ({"maximum": 1} if key in {"llmHitRateMin", "toolHitRateMin", "toolDisableBelow", "errorRatioMax"} else {})
        for key, value in THRESHOLD_DEFAULTS.items()
    }
    return {
        "type": "object",
        "default": {},
        "description": "Grafana dashboards and Prometheus alert rules deployed for this cache.",
        "properties": {
            "dashboards": {
                "type": "object",
                "default": {},
                "properties": {
                    "enabled": {
                        "type": "boolean",
                        "default": True,
                        "description": 'A ConfigMap labelled grafana_dashboard: "1" (Grafana sidecar convention).',
                    },
                    "grafanaOperator": {
                        "type": "string",
                        "enum": ["auto", "enabled", "disabled"],
                        "default": "auto",
                        "description": "GrafanaDashboard objects (grafana-operator): auto = when its CRD exists; "
                        "enabled = required (DashboardsReady is False without the CRD).",
                    },
                    "instanceSelector": {
                        "type": "object",
                        "default": copy.deepcopy(DEFAULT_GRAFANA_INSTANCE_SELECTOR),
                        "description": "GrafanaDashboard spec.instanceSelector: which Grafana instances import them.",
                        "properties": {
                            "matchLabels": _string_map("Labels of the Grafana custom resources."),
                        },
                    },
                    "allowCrossNamespaceImport": {
                        "type": "boolean",
                        "default": True,
                        "description": "Let a Grafana in another namespace import the GrafanaDashboards.",
                    },
                    "labels": _string_map("Extra labels on the dashboard objects."),
                },
            },
            "alerts": {
                "type": "object",
                "default": {},
                "properties": {
                    "enabled": {
                        "type": "boolean",
                        "default": True,
                        "description": "A PrometheusRule (prometheus-operator) when its CRD exists.",
                    },
                    "labels": _string_map(
                        "Extra labels on the PrometheusRule, e.g. the one your Prometheus ruleSelector matches."
                    ),
                    "thresholds": {
                        "type": "object",
                        "default": {},
                        "properties": thresholds,
                        "x-kubernetes-validations": [
                            _rule(
                                "self.toolDisableBelow <= self.toolHitRateMin",
                                "alerts.thresholds.toolDisableBelow must not exceed toolHitRateMin",
                            )
                        ],
                    },
                },
            },
        },
    }


def _spec_schema() -> dict[str, Any]:
    tier = {
        "type": "object",
        "properties": {"ttl": _ttl("Default TTL of the tier's entries, in seconds.")},
    }
    return {
        "type": "object",
        "required": ["valkey"],
        "description": "A cache: its Valkey, its platform-owned TTLs, tool policies and prices, and its monitoring.",
        "properties": {
            "valkey": _valkey_schema(),
            "prefix": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "description": "The cache name (every key's prefix; AgentCache(name=...) in the agents). "
                "Defaults to metadata.name. Immutable.",
                "x-kubernetes-validations": [
                    _rule(
                        f"self.matches('{CACHE_NAME_PATTERN}') && !self.matches('{RESERVED_SEGMENT_PATTERN}')",
                        f"prefix must be {CACHE_NAME_RULE}",
                    ),
                    _rule("self == oldSelf", "prefix is immutable", reason="FieldValueForbidden"),
                ],
            },
            "defaultTTL": _ttl("TTL for every tier without its own, in seconds."),
            "tiers": {
                "type": "object",
                "description": "Per-tier default TTLs; they override the agents' code defaults.",
                "properties": {"llm": tier, "tool": copy.deepcopy(tier), "session": copy.deepcopy(tier)},
            },
            "toolPolicies": {
                "type": "object",
                "description": "Per tool: its TTL, or cacheable: false to never cache it.",
                "maxProperties": _MAX_KEYS,
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "ttl": _ttl("TTL of this tool's results, in seconds."),
                        "cacheable": {"type": "boolean", "default": True},
                    },
                },
            },
            "modelPolicies": {
                "type": "object",
                "description": "Per model name glob (gpt-4o*; an exact name or the pattern with the most literal "
                "characters wins): its TTL (over the tier TTLs), cacheable: false to never cache it, the finish "
                "reasons whose answers are cached (e.g. [stop, tool_calls] refuses truncated answers) and whether "
                "empty answers are. Overrides the agents' own policy of the same pattern; they keep the others.",
                "maxProperties": _MAX_KEYS,
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "ttl": _ttl("TTL of these models' answers, in seconds."),
                        "cacheable": {"type": "boolean", "default": True},
                        "cacheFinishReasons": {
                            "type": "array",
                            "description": "Store only answers that stopped for one of these reasons "
                            "(stop, tool_calls, length, stop_sequence, refusal...). Unset: any.",
                            "maxItems": 32,
                            "x-kubernetes-list-type": "set",
                            "items": {"type": "string", "minLength": 1, "maxLength": 64},
                        },
                        "cacheEmpty": {
                            "type": "boolean",
                            "default": True,
                            "description": "false: an answer with no text and no other content is not stored.",
                        },
                    },
                },
            },
            "costOverrides": {
                "type": "object",
                "description": "Prices per model (dollars per 1000 tokens) used for the dollars-saved figures.",
                "maxProperties": _MAX_KEYS,
                "additionalProperties": {
                    "type": "object",
                    "required": ["inputPer1k", "outputPer1k"],
                    "properties": {
                        "inputPer1k": {"type": "number", "minimum": 0},
                        "outputPer1k": {"type": "number", "minimum": 0},
                    },
                },
            },
            "nearCache": {
                "type": "object",
                "description": "The agents' in-process near-cache (L1) of LLM and tool entries, kept coherent by "
                "Valkey's client tracking: switch it on or off for every instance, and its limits (unset: the "
                "agents' own near_cache option decides). Running instances adopt a change with the live config.",
                "properties": {
                    "enabled": {"type": "boolean", "default": True},
                    "maxEntries": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
                    "maxBytes": {"type": "integer", "minimum": 1, "maximum": 2**40},
                },
            },
            "monitoring": _monitoring_schema(),
            "deletionPolicy": {
                "type": "string",
                "enum": ["Retain", "Delete"],
                "default": "Retain",
                "description": "On deletion the config is always removed; Delete also removes the cached data.",
            },
        },
        "x-kubernetes-validations": [
            _rule(
                "has(self.prefix) == has(oldSelf.prefix)",
                "prefix cannot be added or removed after creation",
                reason="FieldValueForbidden",
            )
        ],
    }


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
    }


def _status_schema() -> dict[str, Any]:
    count = {"type": "integer", "format": "int64", "minimum": 0}
    rate = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "type": "object",
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "prefix": {"type": "string", "description": "The cache name in use."},
            "configVersion": {"type": "string", "description": "Version of the config written to Valkey."},
            "conditions": {
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "stats": {
                "type": "object",
                "description": "Hit rates and dollars saved over every instance of the cache, refreshed by the "
                "operator at a bounded rate (the live counters are in Prometheus).",
                "properties": {
                    "llmHitRate": rate,
                    "toolHitRate": rate,
                    "costSavedDollars": {"type": "number", "minimum": 0},
                },
            },
            "instances": {
                "type": "object",
                "description": "Live library instances and how many run the current config version.",
                "properties": {"total": count, "current": count},
            },
            "monitoring": {
                "type": "object",
                "description": "The child objects deployed for this cache.",
                "properties": {
                    "dashboardsConfigMap": {"type": "string"},
                    "grafanaDashboards": {"type": "array", "items": {"type": "string"}},
                    "prometheusRule": {"type": "string"},
                },
            },
        },
    }


def _root_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A cache for AI agents on Valkey whose configuration the agent-cache operator keeps live.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _spec_schema(),
            "status": _status_schema(),
        },
        "x-kubernetes-validations": [
            _rule(
                f"has(self.spec.prefix) || (size(self.metadata.name) <= {CACHE_NAME_MAX} "
                f"&& self.metadata.name.matches('{CACHE_NAME_PATTERN}'))",
                "metadata.name is not a valid cache name (over 128 characters): set spec.prefix",
            )
        ],
    }


OPENAPI_SCHEMA: dict[str, Any] = _root_schema()

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Prefix", "type": "string", "jsonPath": ".status.prefix"},
    {"name": "LLM Hit Rate", "type": "number", "jsonPath": ".status.stats.llmHitRate"},
    {"name": "Tool Hit Rate", "type": "number", "jsonPath": ".status.stats.toolHitRate"},
    {"name": "Saved $", "type": "number", "jsonPath": ".status.stats.costSavedDollars"},
    {"name": "Instances", "type": "integer", "jsonPath": ".status.instances.total", "priority": 1},
    {"name": "On Config", "type": "integer", "jsonPath": ".status.instances.current", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason', "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    """The ``CustomResourceDefinition`` manifest (a fresh copy every call)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "agent-cache-operator"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["agent-cache"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": copy.deepcopy(OPENAPI_SCHEMA)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                }
            ],
        },
    }


def spec_schema() -> dict[str, Any]:
    return copy.deepcopy(OPENAPI_SCHEMA["properties"]["spec"])


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, as the API server defaults a stored object:
    absent properties that have a ``default`` get it (then their own defaults), recursively."""
    if isinstance(value, Mapping) and schema.get("type") == "object":
        result = {key: copy.deepcopy(item) for key, item in value.items()}
        properties: Mapping[str, Any] = schema.get("properties", {})
        for key, sub in properties.items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = apply_defaults(sub, result[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key in result:
                if key not in properties:
                    result[key] = apply_defaults(extra, result[key])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [apply_defaults(schema["items"], item) for item in value]
    return copy.deepcopy(value)
