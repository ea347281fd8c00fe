"""Validate a custom resource as the API server does: defaults, the structural schema (jsonschema) and the CEL rules
(``x-kubernetes-validations``, with ``oldSelf`` for updates), the latter evaluated by a real CEL implementation
(``common-expression-language``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import cel
import jsonschema

from agent_cache_operator.crd import OPENAPI_SCHEMA, apply_defaults

_ABSENT = object()


def strict(schema: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """The schema with unknown fields forbidden, as the API server's strict field validation (kubectl's default,
    ``--validate=strict``) rejects them; without it they would be pruned silently. ``metadata`` is the server's."""
    result = dict(schema)
    if "properties" in schema:
        result["properties"] = {
            name: sub if (path == "" and name == "metadata") else strict(sub, f"{path}.{name}")
            for name, sub in schema["properties"].items()
        }
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            result["additionalProperties"] = False
    for key in ("additionalProperties", "items"):
        if isinstance(schema.get(key), Mapping):
            result[key] = strict(schema[key], f"{path}[*]")
    return result


_STRICT_SCHEMA = strict(OPENAPI_SCHEMA)


def schema_errors(resource: Mapping[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(_STRICT_SCHEMA)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(resource)]


def cel_errors(resource: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[str]:
    """Messages of the failing rules. Transition rules (those using ``oldSelf``) run only where an old value exists,
    as on the API server."""
    return [message for message in _walk(OPENAPI_SCHEMA, resource, _ABSENT if old is None else old, "")]


def validate(resource: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[str]:
    """Every error the API server would report for a create (or an update from ``old``), defaults applied first."""
    resource = apply_defaults(OPENAPI_SCHEMA, resource)
    old = None if old is None else apply_defaults(OPENAPI_SCHEMA, old)
    errors = schema_errors(resource)
    return errors or cel_errors(resource, old)


def all_rules(schema: Mapping[str, Any] = OPENAPI_SCHEMA, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in schema.get("properties", {}).items():
        yield from all_rules(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from all_rules(schema["additionalProperties"], f"{path}[*]")
    if isinstance(schema.get("items"), Mapping):
        yield from all_rules(schema["items"], f"{path}[*]")


def _typed(schema: Mapping[str, Any], value: Any) -> Any:
    """CEL sees ``type: number`` values as doubles, whatever the YAML said."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            key: _typed(properties.get(key) or (extra if isinstance(extra, Mapping) else {}), item)
            for key, item in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_typed(schema["items"], item) for item in value]
    return value


def _walk(schema: Mapping[str, Any], value: Any, old: Any, path: str) -> Iterator[str]:
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is _ABSENT:
            continue
        context = {"self": _typed(schema, value)}
        if transition:
            context["oldSelf"] = _typed(schema, old)
        if not cel.evaluate(rule["rule"], context):
            yield f"{path or '<root>'}: {rule.get('message', rule['rule'])}"
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key) or (extra if isinstance(extra, Mapping) else None)
            if sub is None:
                continue
            previous = old.get(key, _ABSENT) if isinstance(old, Mapping) else _ABSENT
            yield from _walk(sub, item, previous, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _walk(schema["items"], item, _ABSENT, f"{path}[{index}]")
