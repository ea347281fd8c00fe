"""The CRD: a valid, structural Kubernetes object whose schema and CEL rules accept what they should and reject, with
a message naming the field, what they should — checked with jsonschema and a real CEL implementation."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cel
import kubernetes_validate
import pytest
import yaml

from agent_cache import AgentCacheUsageError
from agent_cache._keys import validate_cache_name
from agent_cache.config import CacheConfig
from agent_cache_operator.bundle import DEFAULT_THRESHOLDS
from agent_cache_operator.crd import (
    CACHE_NAME_PATTERN,
    OPENAPI_SCHEMA,
    PRINTER_COLUMNS,
    THRESHOLD_DEFAULTS,
    apply_defaults,
    build_crd,
)
from agent_cache_operator.spec import is_cache_name, parse_spec
from tests.operator.crd_validation import all_rules, validate

ROOT = Path(__file__).resolve().parents[2]


def resource(name: str = "support-bot", **spec: Any) -> dict[str, Any]:
    spec.setdefault("valkey", {"url": "valkey://valkey.shop.svc:6379"})
    return {"apiVersion": "agentcache.dev/v1alpha1", "kind": "AgentCache", "metadata": {"name": name}, "spec": spec}


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(build_crd(), "1.35", strict=True)
    assert build_crd() == build_crd() and build_crd() is not build_crd()  # a fresh copy each time


def _structural_violations(schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Kubernetes' structural-schema rules that matter here: a type everywhere, properties and
    additionalProperties never together, defaults that validate."""
    problems = []
    if "type" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path or '<root>'}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: properties and additionalProperties together")
    if "default" in schema and "enum" in schema and schema["default"] not in schema["enum"]:
        problems.append(f"{path}: default not in enum")
    for name, sub in schema.get("properties", {}).items():
        problems += _structural_violations(sub, f"{path}.{name}")
    for key in ("additionalProperties", "items"):
        if isinstance(schema.get(key), Mapping):
            problems += _structural_violations(schema[key], f"{path}[*]")
    return problems


def test_the_schema_is_structural_and_metadata_is_left_to_the_server() -> None:
    assert _structural_violations(OPENAPI_SCHEMA) == []
    assert OPENAPI_SCHEMA["properties"]["metadata"] == {"type": "object"}
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:6] == [
        "Ready", "Prefix", "LLM Hit Rate", "Tool Hit Rate", "Saved $", "Instances",
    ]  # fmt: skip
    assert PRINTER_COLUMNS[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def test_every_cel_rule_compiles_and_has_a_message() -> None:
    rules = list(all_rules())
    assert len(rules) >= 9
    for path, rule in rules:
        cel.compile(rule["rule"])  # raises on a syntax error
        assert rule.get("message"), path


def test_defaults_are_the_documented_ones_and_the_bundles() -> None:
    spec = apply_defaults(OPENAPI_SCHEMA, resource())["spec"]
    assert spec["deletionPolicy"] == "Retain"
    assert spec["valkey"]["cluster"] is False
    assert spec["monitoring"]["dashboards"] == {
        "enabled": True,
        "grafanaOperator": "auto",
        "instanceSelector": {"matchLabels": {"dashboards": "grafana"}},
        "allowCrossNamespaceImport": True,
    }
    assert spec["monitoring"]["alerts"]["enabled"] is True
    assert spec["monitoring"]["alerts"]["thresholds"] == THRESHOLD_DEFAULTS == DEFAULT_THRESHOLDS
    assert THRESHOLD_DEFAULTS == {
        "llmHitRateMin": 0.2,
        "toolHitRateMin": 0.2,
        "toolDisableBelow": 0.1,
        "latencyP99MaxSeconds": 0.05,
        "errorRatioMax": 0.01,
        "expectedMinRequestsPerSecond": 0,
    }


VALID = {
    "minimal url": resource(),
    "host with secrets and TLS": resource(
        valkey={
            "host": "valkey.shop.svc",
            "port": 6380,
            "db": 2,
            "passwordSecretRef": {"name": "valkey-auth"},
            "usernameSecretRef": {"name": "valkey-auth", "key": "user"},
            "tls": {
                "enabled": True,
                "caSecretRef": {"name": "valkey-tls"},
                "certSecretRef": {"name": "client-tls"},
            },
        }
    ),
    "cluster": resource(valkey={"url": "rediss://cfg.cache.amazonaws.com:6379", "cluster": True}),
    "a user but no password in the URL": resource(valkey={"url": "valkey://agent@valkey:6379/1"}),
    "config": resource(
        prefix="support_bot.v2",
        defaultTTL=600,
        tiers={"llm": {"ttl": 3600}, "tool": {"ttl": 300}, "session": {"ttl": 1800}},
        toolPolicies={"get_weather": {"ttl": 600}, "send_email": {"cacheable": False}, "any tool: name": {}},
        costOverrides={"gpt-4o": {"inputPer1k": 0.0025, "outputPer1k": 0}},
        deletionPolicy="Delete",
    ),
    "thresholds as integers": resource(monitoring={"alerts": {"thresholds": {"toolHitRateMin": 1}}}),
    "name is the prefix": resource(name="a" * 128),
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_valid_resources_pass_and_parse(body: dict[str, Any]) -> None:
    assert validate(body) == []
    parse_spec(body["spec"], body["metadata"]["name"])  # the operator accepts what the API server accepts


INVALID = {
    "no valkey": (resource(valkey=None), "'valkey' is a required property"),
    "url and host": (
        resource(valkey={"url": "valkey://a:1", "host": "b"}),
        "set exactly one of valkey.url and valkey.host",
    ),
    "neither url nor host": (resource(valkey={"db": 1}), "set exactly one of valkey.url and valkey.host"),
    "a password in the URL": (
        resource(valkey={"url": "valkey://agent:hunter2@valkey:6379"}),
        "valkey.url must not contain a password",
    ),
    "an unknown scheme": (resource(valkey={"url": "http://valkey:6379"}), "must start with valkey://"),
    "port without host": (resource(valkey={"url": "valkey://v:1", "port": 2}), "valkey.port goes with valkey.host"),
    "a database in cluster mode": (
        resource(valkey={"host": "v", "cluster": True, "db": 3}),
        "a Valkey Cluster has only database 0",
    ),
    "a plaintext password field": (resource(valkey={"host": "v", "password": "x"}), None),
    "zero TTL": (resource(defaultTTL=0), "must be a positive number of seconds"),
    "negative tier TTL": (resource(tiers={"llm": {"ttl": -5}}), "must be a positive number of seconds"),
    "negative tool TTL": (resource(toolPolicies={"t": {"ttl": -1}}), "must be a positive number of seconds"),
    "an unknown tier": (resource(tiers={"embeddings": {"ttl": 5}}), "Additional properties are not allowed"),
    "a bad prefix": (resource(prefix="has space"), "prefix must be 1-128 characters"),
    "a key family after a colon": (resource(prefix="shop:llm"), "llm, tool, session and checkpoint cannot follow"),
    "a name too long for a prefix": (resource(name="a" * 129), "metadata.name is not a valid cache name"),
    "a negative price": (resource(costOverrides={"m": {"inputPer1k": -1, "outputPer1k": 1}}), "less than the minimum"),
    "a price missing": (resource(costOverrides={"m": {"inputPer1k": 1}}), "'outputPer1k' is a required property"),
    "a hit rate above 1": (
        resource(monitoring={"alerts": {"thresholds": {"llmHitRateMin": 1.5}}}),
        "greater than the maximum",
    ),
    "disable above the minimum": (
        resource(monitoring={"alerts": {"thresholds": {"toolDisableBelow": 0.5}}}),
        "toolDisableBelow must not exceed toolHitRateMin",
    ),
    "an unknown deletion policy": (resource(deletionPolicy="Orphan"), "'Orphan' is not one of"),
    "an unknown grafana mode": (
        resource(monitoring={"dashboards": {"grafanaOperator": "maybe"}}),
        "'maybe' is not one of",
    ),
}


@pytest.mark.parametrize(("body", "message"), INVALID.values(), ids=INVALID.keys())
def test_invalid_resources_are_rejected_with_a_message_naming_the_problem(
    body: dict[str, Any], message: str | None
) -> None:
    if body["spec"].get("valkey") is None:
        del body["spec"]["valkey"]
    errors = validate(body)
    assert errors, "accepted"
    if message is not None:
        assert any(message in error for error in errors), errors


def test_a_plaintext_password_field_is_not_part_of_the_schema() -> None:
    valkey_properties = OPENAPI_SCHEMA["properties"]["spec"]["properties"]["valkey"]["properties"]
    assert "password" not in valkey_properties and "username" not in valkey_properties
    assert "Additional properties are not allowed ('password'" in " ".join(
        validate(resource(valkey={"host": "v", "password": "x"}))
    )


def test_the_prefix_is_immutable() -> None:
    old = resource(prefix="support_bot")
    assert validate(resource(prefix="support_bot", defaultTTL=5), old=old) == []
    assert any("prefix is immutable" in e for e in validate(resource(prefix="other"), old=old))
    assert any("cannot be added or removed" in e for e in validate(resource(), old=old))
    assert any("cannot be added or removed" in e for e in validate(resource(prefix="x"), old=resource()))
    # Without a previous version (a create), transition rules do not apply.
    assert validate(resource(prefix="other")) == []


def test_the_shipped_examples_validate_and_feed_the_library_config() -> None:
    """``agent-cache config apply -f agentcache.yaml`` reads the same YAML: CacheConfig.from_spec(resource["spec"])."""
    examples = sorted((ROOT / "manifests" / "examples").glob("agentcache*.yaml"))
    if not examples:
        pytest.skip("no generated examples in manifests/examples")
    for path in examples:
        body = yaml.safe_load(path.read_text())
        assert validate(body) == [], path.name
        config = CacheConfig.from_spec(body["spec"])
        parsed = parse_spec(body["spec"], body["metadata"]["name"])
        assert parsed.config == config


def test_defaulting_does_not_touch_what_is_set() -> None:
    body = resource(monitoring={"alerts": {"enabled": False, "thresholds": {"llmHitRateMin": 0.9}}})
    original = copy.deepcopy(body)
    defaulted = apply_defaults(OPENAPI_SCHEMA, body)
    assert body == original
    alerts = defaulted["spec"]["monitoring"]["alerts"]
    assert alerts["enabled"] is False and alerts["thresholds"]["llmHitRateMin"] == 0.9
    assert alerts["thresholds"]["toolHitRateMin"] == 0.2


@pytest.mark.parametrize(
    "name",
    [
        *("a", "support-bot", "Support_Bot.v2", "9lives", "a" * 128, "a" * 129, "-x", ".x", "a b", "", "ü"),
        *("a:b", "shop:prod:v2", "a:" + "b" * 126, "a:" + "b" * 127, "a:", ":a", "a::b", "a:_b", "a:-b"),
        *(f"shop:{family}" for family in ("llm", "tool", "session", "checkpoint")),
        *("shop:llm:x", "llm:shop", "shop:llmx", "shop:tools"),
    ],
)
def test_the_prefix_rule_is_the_librarys(name: str) -> None:
    """The CRD's CEL rules and the operator's own check accept exactly the cache names the library accepts."""
    try:
        validate_cache_name(name)
        library_accepts = True
    except AgentCacheUsageError:
        library_accepts = False
    assert is_cache_name(name) == library_accepts
    assert (validate(resource(prefix=name)) == []) == library_accepts
    assert bool(re.fullmatch(CACHE_NAME_PATTERN, name)) >= library_accepts  # the pattern is one of the rules
