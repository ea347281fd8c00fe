"""Live configuration: what the operator (or ``agent-cache config apply``) writes, and every instance applies.

Protocol (documented in the README, "Live configuration"):

- ``{name}:__config`` hash: ``spec`` (canonical JSON of the config document below), ``version`` (a hash of
  ``spec``, so re-applying the same spec is a no-op), ``source`` and ``updated_at``. One HSET, so a reader
  never sees half a config.
- ``{name}:__tool_policies`` shows the document's tool policies (BetterDB Monitor reads that hash) next to the
  application's own (``set_policy``); the application's policy of a tool the config names is kept aside and
  comes back when the config stops naming it (see ``_scripts.MIRROR_TOOL_POLICIES``).
- ``PUBLISH {name}:__config:changed <version>`` announces a change; instances also re-read on an interval.
- ``{name}:__instances`` hash: field = instance id, value = JSON ``{"version", "seen", "host", "pid"}`` —
  which config each live instance applied, refreshed with the heartbeat, so the operator can count them.

The document is the config part of an ``AgentCache`` resource's ``spec`` (camelCase, as in the CRD)::

    defaultTTL: 600
    tiers: {llm: {ttl: 3600}, tool: {ttl: 300}, session: {ttl: 1800}}
    toolPolicies: {get_weather: {ttl: 600}, send_email: {cacheable: false}}
    modelPolicies: {"gpt-4o*": {ttl: 7200, cacheFinishReasons: [stop, tool_calls]}, o1-preview: {cacheable: false}}
    costOverrides: {gpt-4o: {inputPer1k: 0.0025, outputPer1k: 0.01}}
    nearCache: {enabled: true, maxEntries: 10000, maxBytes: 67108864}

Model policies go to ``{name}:__model_policies`` the same way (``tiers._model_policy``).

A config overrides the code's defaults (the platform owns them); a per-call TTL still wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._backend import Backend, as_text
from ._errors import AgentCacheUsageError, ConfigurationError
from ._keys import KeyLayout
from ._scripts import HDEL_UNCHANGED, MIRROR_TOOL_POLICIES
from ._ttl import TIERS, validate_ttl
from .tiers._model_policy import (
    MODEL_POLICY_FIELDS,
    ModelPolicy,
    model_policies_key,
    model_policy_document,
    owned_model_policies_key,
    parse_model_policy,
    validate_pattern,
)
from .tiers.tool import owned_policies_key, policy_document
from .types import ModelCost, ToolPolicy

CONFIG_KEYS = ("defaultTTL", "tiers", "toolPolicies", "modelPolicies", "costOverrides", "nearCache")
NEAR_CACHE_FIELDS = ("enabled", "maxEntries", "maxBytes")


def _ttl_at(value: object, path: str) -> int | None:
    try:
        return validate_ttl(value, path)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _mapping_at(value: object, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{path} must be a mapping, got {type(value).__name__}")
    return value


def _price_at(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or value == float("inf"):
        raise ConfigurationError(f"{path} must be a non-negative number of dollars, got {value!r}")
    return float(value)


_KNOWN_BELOW = {
    "tiers": ("ttl",),
    "toolPolicies": ("ttl", "cacheable"),
    "modelPolicies": MODEL_POLICY_FIELDS,
    "costOverrides": ("inputPer1k", "outputPer1k"),
}


def unknown_config_fields(spec: Mapping[str, Any], path: str = "spec") -> list[str]:
    """Paths of the keys inside the config keys that ``CacheConfig.from_spec`` would pass over — typos such as
    ``spec.tiers.llm.tll`` or ``spec.toolPolicies.send_email.cachable``. Pure."""
    near = spec.get("nearCache")
    unknown = (
        [f"{path}.nearCache.{key}" for key in sorted(map(str, near)) if key not in NEAR_CACHE_FIELDS]
        if isinstance(near, Mapping)
        else []
    )
    for section, known in _KNOWN_BELOW.items():
        entries = spec.get(section)
        if not isinstance(entries, Mapping):
            continue
        for entry, settings in entries.items():
            if isinstance(settings, Mapping):
                unknown += [f"{path}.{section}.{entry}.{key}" for key in sorted(map(str, settings)) if key not in known]
    return unknown


@dataclass(frozen=True)
class NearCacheSetting:
    """The platform's switch for the in-process near-cache (``spec.nearCache``); unset limits keep the code's."""

    enabled: bool = True
    max_entries: int | None = None
    max_bytes: int | None = None

    @classmethod
    def from_spec(cls, value: object, path: str) -> NearCacheSetting:
        document = _mapping_at(value, path)
        enabled = document.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigurationError(f"{path}.enabled must be true or false, got {enabled!r}")
        limits: dict[str, int | None] = {}
        for key in ("maxEntries", "maxBytes"):
            limit = document.get(key)
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
                raise ConfigurationError(f"{path}.{key} must be a positive integer, got {limit!r}")
            limits[key] = limit
        return cls(enabled, limits["maxEntries"], limits["maxBytes"])

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"enabled": self.enabled}
        if self.max_entries is not None:
            spec["maxEntries"] = self.max_entries
        if self.max_bytes is not None:
            spec["maxBytes"] = self.max_bytes
        return spec


@dataclass(frozen=True)
class CacheConfig:
    """The platform-owned part of a cache's configuration."""

    default_ttl: int | None = None
    tiers: Mapping[str, int | None] = field(default_factory=dict)
    tool_policies: Mapping[str, ToolPolicy] = field(default_factory=dict)
    cost_overrides: Mapping[str, ModelCost] = field(default_factory=dict)
    model_policies: Mapping[str, ModelPolicy] = field(default_factory=dict)
    near_cache: NearCacheSetting | None = None
    """The near-cache switch (None: the application's own ``near_cache`` option decides)."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], path: str = "spec") -> CacheConfig:
        """Read the config keys of an AgentCache ``spec``; other keys (valkey, monitoring...) are ignored."""
        spec = _mapping_at(spec, path)
        tiers: dict[str, int | None] = {}
        for tier, settings in _mapping_at(spec.get("tiers"), f"{path}.tiers").items():
            if tier not in TIERS:
                raise ConfigurationError(f"{path}.tiers.{tier} is not a tier; valid tiers: {', '.join(TIERS)}")
            ttl = _ttl_at(_mapping_at(settings, f"{path}.tiers.{tier}").get("ttl"), f"{path}.tiers.{tier}.ttl")
            if ttl is not None:
                tiers[tier] = ttl
        policies = {}
        for tool, policy in _mapping_at(spec.get("toolPolicies"), f"{path}.toolPolicies").items():
            where = f"{path}.toolPolicies.{tool}"
            policy = _mapping_at(policy, where)
            cacheable = policy.get("cacheable", True)
            if not isinstance(cacheable, bool):
                raise ConfigurationError(f"{where}.cacheable must be true or false, got {cacheable!r}")
            policies[tool] = ToolPolicy(ttl=_ttl_at(policy.get("ttl"), f"{where}.ttl"), cacheable=cacheable)
        models = {}
        for pattern, policy in _mapping_at(spec.get("modelPolicies"), f"{path}.modelPolicies").items():
            where = f"{path}.modelPolicies.{pattern}"
            try:
                validate_pattern(pattern, f"{path}.modelPolicies key")
                models[pattern] = parse_model_policy(_mapping_at(policy, where), where)
            except AgentCacheUsageError as exc:
                raise ConfigurationError(str(exc)) from None
        costs = {}
        for model, price in _mapping_at(spec.get("costOverrides"), f"{path}.costOverrides").items():
            where = f"{path}.costOverrides.{model}"
            price = _mapping_at(price, where)
            costs[model] = ModelCost(
                input_per_1k=_price_at(price.get("inputPer1k"), f"{where}.inputPer1k"),
                output_per_1k=_price_at(price.get("outputPer1k"), f"{where}.outputPer1k"),
            )
        return cls(
            default_ttl=_ttl_at(spec.get("defaultTTL"), f"{path}.defaultTTL"),
            tiers=tiers,
            tool_policies=policies,
            cost_overrides=costs,
            model_policies=models,
            near_cache=None
            if spec.get("nearCache") is None
            else NearCacheSetting.from_spec(spec["nearCache"], f"{path}.nearCache"),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.default_ttl is not None:
            spec["defaultTTL"] = self.default_ttl
        if self.tiers:
            spec["tiers"] = {tier: {"ttl": ttl} for tier, ttl in sorted(self.tiers.items())}
        if self.tool_policies:
            spec["toolPolicies"] = {tool: policy_document(p) for tool, p in sorted(self.tool_policies.items())}
        if self.model_policies:
            spec["modelPolicies"] = {
                pattern: model_policy_document(p) for pattern, p in sorted(self.model_policies.items())
            }
        if self.cost_overrides:
            spec["costOverrides"] = {
                model: {"inputPer1k": c.input_per_1k, "outputPer1k": c.output_per_1k}
                for model, c in sorted(self.cost_overrides.items())
            }
        if self.near_cache is not None:
            spec["nearCache"] = self.near_cache.to_spec()
        return spec

    def canonical(self) -> str:
        return json.dumps(self.to_spec(), sort_keys=True, separators=(",", ":"))

    @property
    def version(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AppliedConfig:
    config: CacheConfig
    version: str
    source: str
    updated_at: str


@dataclass(frozen=True)
class InstanceRecord:
    instance_id: str
    version: str | None
    seen: float
    host: str
    pid: int


def changed_channel(name: str) -> str:
    return f"{name}:__config:changed"


def instances_key(name: str) -> str:
    return f"{name}:__instances"


def parse_applied(raw: Mapping[Any, Any]) -> AppliedConfig | None:
    """Decode the ``__config`` hash; raises ConfigurationError when it is malformed."""
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    if not fields:
        return None
    if "spec" not in fields:
        raise ConfigurationError("the __config hash has no 'spec' field")
    try:
        document = json.loads(fields["spec"])
    except ValueError as exc:
        raise ConfigurationError(f"the __config spec is not JSON: {exc}") from None
    config = CacheConfig.from_spec(document)
    return AppliedConfig(
        config, fields.get("version", config.version), fields.get("source", ""), fields.get("updated_at", "")
    )


# ── the writer side (operator and CLI) ─────────────────────────────────────────


async def apply_config(client: Any, name: str, config: CacheConfig, source: str) -> str:
    """Write a config, mirror its tool policies and announce it; returns its version. Idempotent."""
    keys = KeyLayout(name)
    backend = Backend(client)
    version = config.version
    fields = {"spec": config.canonical(), "version": version, "source": source}
    current = await backend.command("HMGET", keys.config, "version", "source")
    if [None if v is None else as_text(v) for v in current] == [version, source]:
        return version
    policies = [
        item for tool, p in sorted(config.tool_policies.items()) for item in (tool, json.dumps(policy_document(p)))
    ]
    models = [
        item
        for pattern, p in sorted(config.model_policies.items())
        for item in (pattern, json.dumps(model_policy_document(p)))
    ]
    await _mirror_policies(backend, keys, policies, models)
    await backend.command("HSET", keys.config, *_flat({**fields, "updated_at": datetime.now(UTC).isoformat()}))
    await backend.command("PUBLISH", changed_channel(name), version)
    return version


async def _mirror_policies(backend: Backend, keys: KeyLayout, policies: list[str], models: list[str]) -> None:
    """Show the config's policies in the policies hashes; the application's policies of tools (model patterns)
    the config does not name stay, and one it stops naming gets its application policy back (one script, one
    slot, per hash)."""
    try:
        await backend.run_script(MIRROR_TOOL_POLICIES, (keys.tool_policies, owned_policies_key(keys)), policies)
        await backend.run_script(
            MIRROR_TOOL_POLICIES, (model_policies_key(keys), owned_model_policies_key(keys)), models
        )
    finally:
        await backend.close()  # a script call keeps a connection for the next one: give it back to the pool


def _flat(mapping: Mapping[str, str]) -> list[str]:
    return [item for pair in mapping.items() for item in pair]


async def read_config(client: Any, name: str) -> AppliedConfig | None:
    return parse_applied(await Backend(client).command("HGETALL", KeyLayout(name).config) or {})


async def delete_config(client: Any, name: str) -> None:
    """Remove the platform's config; instances fall back to their code defaults and the application's own
    tool policies (``set_policy``), which the config had only shadowed."""
    keys = KeyLayout(name)
    backend = Backend(client)
    await _mirror_policies(backend, keys, [], [])
    await backend.delete_many([keys.config, instances_key(name)])
    await backend.command("PUBLISH", changed_channel(name), "")


async def list_instances(client: Any, name: str, max_age_s: float = 90.0) -> list[InstanceRecord]:
    """Live instances of a cache and the config version each applied (stale records are pruned)."""
    backend = Backend(client)
    raw = await backend.command("HGETALL", instances_key(name)) or {}
    now = time.time()
    live: list[InstanceRecord] = []
    stale: list[Any] = []  # field, value as read: pruned only if unchanged (the instance did not report since)
    for instance_id, value in raw.items():
        try:
            record = json.loads(value)
            entry = InstanceRecord(
                as_text(instance_id), record.get("version"), float(record["seen"]), record["host"], int(record["pid"])
            )
        except (ValueError, KeyError, TypeError):
            stale += (instance_id, value)
            continue
        if now - entry.seen <= max_age_s:
            live.append(entry)
        else:
            stale += (instance_id, value)
    if stale:
        try:
            await backend.run_script(HDEL_UNCHANGED, (instances_key(name),), stale)
        finally:
            await backend.close()  # a script call keeps a connection for the next one: give it back to the pool
    return sorted(live, key=lambda r: r.instance_id)


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def record_instance(backend: Backend, name: str, instance_id: str, version: str | None) -> None:
    record = {"version": version, "seen": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    await backend.command("HSET", instances_key(name), instance_id, json.dumps(record))


async def forget_instance(backend: Backend, name: str, instance_id: str) -> None:
    await backend.command("HDEL", instances_key(name), instance_id)
