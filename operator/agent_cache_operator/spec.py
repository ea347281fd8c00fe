"""An ``AgentCache`` resource read into typed values — pure, no I/O.

The API server validates a resource against the CRD's schema and CEL rules before the operator ever sees it, but the
operator checks again: a resource may come from an API server that validates nothing (a test emulator, an old server
without CEL) or from a YAML file (``agent-cache config apply -f``), and a config must never reach Valkey half-checked.
Every error names the field, the way the API server would, and never echoes a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard
from urllib.parse import urlsplit

from agent_cache import ConfigurationError
from agent_cache.config import CacheConfig

from .crd import (
    CACHE_NAME_MAX,
    CACHE_NAME_PATTERN,
    CACHE_NAME_RULE,
    RESERVED_SEGMENT_PATTERN,
    THRESHOLD_DEFAULTS,
    URL_SCHEMES,
    apply_defaults,
    spec_schema,
)

_CACHE_NAME = re.compile(CACHE_NAME_PATTERN)
_RESERVED_SEGMENT = re.compile(RESERVED_SEGMENT_PATTERN)
_SPEC_SCHEMA = spec_schema()

GrafanaOperatorMode = Literal["auto", "enabled", "disabled"]
DeletionPolicy = Literal["Retain", "Delete"]


class InvalidSpecError(ValueError):
    """The resource cannot be acted on until its spec (or a Secret it names) is fixed."""


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str

    def describe(self) -> str:
        return f"Secret {self.name!r} key {self.key!r}"


@dataclass(frozen=True)
class TlsSpec:
    enabled: bool = False
    ca: SecretKeyRef | None = None
    cert: SecretKeyRef | None = None
    key: SecretKeyRef | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class ValkeySpec:
    url: str | None = None
    host: str | None = None
    port: int = 6379
    db: int | None = None
    cluster: bool = False
    password: SecretKeyRef | None = None
    username: SecretKeyRef | None = None
    tls: TlsSpec = field(default_factory=TlsSpec)

    def secret_refs(self) -> list[tuple[str, SecretKeyRef]]:
        """Every Secret key this connection needs, with the spec field that names it."""
        refs = [
            ("spec.valkey.passwordSecretRef", self.password),
            ("spec.valkey.usernameSecretRef", self.username),
            ("spec.valkey.tls.caSecretRef", self.tls.ca),
            ("spec.valkey.tls.certSecretRef", self.tls.cert),
            ("spec.valkey.tls.certSecretRef", self.tls.key),
        ]
        return [(where, ref) for where, ref in refs if ref is not None]

    def endpoint(self) -> str:
        """Where it connects, for messages: host:port, or the URL's host:port (never its user info)."""
        if self.url is not None:
            parts = urlsplit(self.url)
            return f"{parts.hostname}:{parts.port or 6379}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DashboardsSpec:
    enabled: bool = True
    grafana_operator: GrafanaOperatorMode = "auto"
    instance_selector: Mapping[str, Any] = field(default_factory=dict)
    allow_cross_namespace_import: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertsSpec:
    enabled: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(THRESHOLD_DEFAULTS))


@dataclass(frozen=True)
class AgentCacheSpec:
    """Everything the operator acts on, checked."""

    prefix: str
    valkey: ValkeySpec
    config: CacheConfig
    dashboards: DashboardsSpec
    alerts: AlertsSpec
    deletion_policy: DeletionPolicy


@dataclass(frozen=True)
class CleanupTarget:
    """What a deletion acts on: the cache's Valkey, its prefix and what to delete there."""

    prefix: str
    valkey: ValkeySpec
    deletion_policy: DeletionPolicy


def parse_cleanup_target(
    spec: Mapping[str, Any] | None, name: str, *, recorded_prefix: str | None = None
) -> CleanupTarget:
    """The parts of a spec a deletion needs, read even when the rest (a TTL, a threshold) no longer parses: a spec
    broken after its config reached Valkey must not leave that config behind. ``recorded_prefix`` (``status.prefix``)
    is the prefix actually managed."""
    if not isinstance(spec, Mapping):
        raise InvalidSpecError("spec is required and must be an object")
    spec = apply_defaults(_SPEC_SCHEMA, spec)
    policy = spec.get("deletionPolicy", "Retain")
    if policy not in ("Retain", "Delete"):
        raise InvalidSpecError(f"spec.deletionPolicy must be Retain or Delete, got {policy!r}")
    prefix = recorded_prefix if recorded_prefix is not None else resolve_prefix(spec, name)
    return CleanupTarget(prefix=prefix, valkey=parse_valkey(spec.get("valkey")), deletion_policy=policy)


def is_cache_name(name: object) -> TypeGuard[str]:
    """The library's cache-name rule, as the CRD's CEL rules state it."""
    return (
        isinstance(name, str)
        and len(name) <= CACHE_NAME_MAX
        and _CACHE_NAME.fullmatch(name) is not None
        and _RESERVED_SEGMENT.search(name) is None
    )


def resolve_prefix(spec: Mapping[str, Any], name: str) -> str:
    prefix = spec.get("prefix")
    if prefix is None:
        if is_cache_name(name):
            return name
        raise InvalidSpecError(
            f"spec.prefix is required: metadata.name {name!r} is not a valid cache name ({CACHE_NAME_RULE})"
        )
    if not is_cache_name(prefix):
        raise InvalidSpecError(f"spec.prefix {prefix!r} is invalid: use {CACHE_NAME_RULE}")
    return prefix


def parse_spec(spec: Mapping[str, Any] | None, name: str, *, recorded_prefix: str | None = None) -> AgentCacheSpec:
    """Check and type a resource's ``spec`` (defaults applied as the API server would).

    ``recorded_prefix`` is the prefix the operator already manages for this resource (``status.prefix``): the prefix
    is immutable, and an API server without CEL would not have stopped a change.
    """
    if not isinstance(spec, Mapping):
        raise InvalidSpecError("spec is required and must be an object")
    spec = apply_defaults(_SPEC_SCHEMA, spec)
    prefix = resolve_prefix(spec, name)
    if recorded_prefix is not None and prefix != recorded_prefix:
        raise InvalidSpecError(
            f"spec.prefix is immutable: this resource manages cache {recorded_prefix!r}, not {prefix!r} "
            "(delete and re-create the resource to move to another prefix)"
        )
    try:
        config = CacheConfig.from_spec(spec)
    except ConfigurationError as exc:
        raise InvalidSpecError(str(exc)) from None
    policy = spec.get("deletionPolicy", "Retain")
    if policy not in ("Retain", "Delete"):
        raise InvalidSpecError(f"spec.deletionPolicy must be Retain or Delete, got {policy!r}")
    monitoring = _mapping(spec.get("monitoring"), "spec.monitoring")
    return AgentCacheSpec(
        prefix=prefix,
        valkey=parse_valkey(spec.get("valkey")),
        config=config,
        dashboards=_dashboards(_mapping(monitoring.get("dashboards"), "spec.monitoring.dashboards")),
        alerts=_alerts(_mapping(monitoring.get("alerts"), "spec.monitoring.alerts")),
        deletion_policy=policy,
    )


def parse_valkey(raw: object) -> ValkeySpec:
    where = "spec.valkey"
    if raw is None:
        raise InvalidSpecError("spec.valkey is required (url, or host and port)")
    valkey = _mapping(raw, where)
    for plaintext in ("password", "username"):
        if plaintext in valkey:  # a real API server prunes it; say why it cannot work
            raise InvalidSpecError(
                f"{where}.{plaintext} is not supported: put it in a Secret and reference it with "
                f"{where}.{plaintext}SecretRef"
            )
    url, host = valkey.get("url"), valkey.get("host")
    if (url is None) == (host is None):
        raise InvalidSpecError("set exactly one of spec.valkey.url and spec.valkey.host")
    cluster = _bool(valkey.get("cluster", False), f"{where}.cluster")
    db = valkey.get("db")
    if db is not None and (isinstance(db, bool) or not isinstance(db, int) or db < 0):
        raise InvalidSpecError(f"{where}.db must be a non-negative integer, got {db!r}")
    if cluster and db:
        raise InvalidSpecError(f"{where}.db must be 0 with cluster: true (a Valkey Cluster has only database 0)")
    port = valkey.get("port", 6379)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidSpecError(f"{where}.port must be an integer from 1 to 65535, got {port!r}")
    if url is not None:
        _check_url(url, f"{where}.url")
        if "port" in valkey:
            raise InvalidSpecError(f"{where}.port goes with {where}.host: put the port in {where}.url")
    elif not isinstance(host, str) or not host or len(host) > 253 or any(c in host for c in "/@ "):
        raise InvalidSpecError(f"{where}.host must be a hostname or IP address, got {host!r}")
    tls = _mapping(valkey.get("tls"), f"{where}.tls")
    cert = tls.get("certSecretRef")
    cert_ref = key_ref = None
    if cert is not None:
        at = f"{where}.tls.certSecretRef"
        cert_map = _mapping(cert, at)
        cert_ref = _secret_ref({"name": cert_map.get("name"), "key": cert_map.get("certKey", "tls.crt")}, at, "")
        key_ref = _secret_ref({"name": cert_map.get("name"), "key": cert_map.get("keyKey", "tls.key")}, at, "")
    scheme_tls = url is not None and urlsplit(url).scheme in ("valkeys", "rediss")
    return ValkeySpec(
        url=url,
        host=host,
        port=port,
        db=db,
        cluster=cluster,
        password=_optional_ref(valkey.get("passwordSecretRef"), f"{where}.passwordSecretRef", "password"),
        username=_optional_ref(valkey.get("usernameSecretRef"), f"{where}.usernameSecretRef", "username"),
        tls=TlsSpec(
            enabled=_bool(tls.get("enabled", False), f"{where}.tls.enabled") or scheme_tls,
            ca=_optional_ref(tls.get("caSecretRef"), f"{where}.tls.caSecretRef", "ca.crt"),
            cert=cert_ref,
            key=key_ref,
            insecure_skip_verify=_bool(tls.get("insecureSkipVerify", False), f"{where}.tls.insecureSkipVerify"),
        ),
    )


def _check_url(url: object, where: str) -> None:
    if not isinstance(url, str) or not url:
        raise InvalidSpecError(f"{where} must be a non-empty string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidSpecError(f"{where} is not a valid URL") from None
    if parts.scheme not in URL_SCHEMES:
        raise InvalidSpecError(f"{where} must start with valkey://, valkeys://, redis:// or rediss://")
    if parts.password is not None:
        # Never echo the URL: it holds a credential.
        raise InvalidSpecError(f"{where} must not contain a password: use spec.valkey.passwordSecretRef")
    if not parts.hostname:
        raise InvalidSpecError(f"{where} has no host")


def _dashboards(raw: Mapping[str, Any]) -> DashboardsSpec:
    where = "spec.monitoring.dashboards"
    mode = raw.get("grafanaOperator", "auto")
    if mode not in ("auto", "enabled", "disabled"):
        raise InvalidSpecError(f"{where}.grafanaOperator must be auto, enabled or disabled, got {mode!r}")
    selector = _mapping(raw.get("instanceSelector"), f"{where}.instanceSelector")
    return DashboardsSpec(
        enabled=_bool(raw.get("enabled", True), f"{where}.enabled"),
        grafana_operator=mode,
        instance_selector={"matchLabels": _labels(selector.get("matchLabels"), f"{where}.instanceSelector")},
        allow_cross_namespace_import=_bool(
            raw.get("allowCrossNamespaceImport", True), f"{where}.allowCrossNamespaceImport"
        ),
        labels=_labels(raw.get("labels"), f"{where}.labels"),
    )


def _alerts(raw: Mapping[str, Any]) -> AlertsSpec:
    where = "spec.monitoring.alerts"
    given = _mapping(raw.get("thresholds"), f"{where}.thresholds")
    thresholds: dict[str, float] = {}
    for key, default in THRESHOLD_DEFAULTS.items():
        value = given.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
            raise InvalidSpecError(f"{where}.thresholds.{key} must be a non-negative number, got {value!r}")
        thresholds[key] = float(value)
    unknown = sorted(set(given) - set(THRESHOLD_DEFAULTS))
    if unknown:
        raise InvalidSpecError(
            f"{where}.thresholds.{unknown[0]} is not a threshold; valid: {', '.join(THRESHOLD_DEFAULTS)}"
        )
    for key in ("llmHitRateMin", "toolHitRateMin", "toolDisableBelow", "errorRatioMax"):
        if thresholds[key] > 1:
            raise InvalidSpecError(f"{where}.thresholds.{key} is a ratio from 0 to 1, got {thresholds[key]!r}")
    if thresholds["toolDisableBelow"] > thresholds["toolHitRateMin"]:
        raise InvalidSpecError(f"{where}.thresholds.toolDisableBelow must not exceed toolHitRateMin")
    return AlertsSpec(
        enabled=_bool(raw.get("enabled", True), f"{where}.enabled"),
        labels=_labels(raw.get("labels"), f"{where}.labels"),
        thresholds=thresholds,
    )


def _optional_ref(raw: object, where: str, default_key: str) -> SecretKeyRef | None:
    return None if raw is None else _secret_ref(raw, where, default_key)


def _secret_ref(raw: object, where: str, default_key: str) -> SecretKeyRef:
    ref = _mapping(raw, where)
    name, key = ref.get("name"), ref.get("key", default_key)
    if not isinstance(name, str) or not name:
        raise InvalidSpecError(f"{where}.name must name a Secret in this namespace")
    if not isinstance(key, str) or not key:
        raise InvalidSpecError(f"{where}.key must be a non-empty string")
    return SecretKeyRef(name, key)


def _labels(raw: object, where: str) -> dict[str, str]:
    labels = _mapping(raw, where)
    for key, value in labels.items():
        if not isinstance(value, str):
            raise InvalidSpecError(f"{where}.{key} must be a string, got {value!r}")
    return dict(labels)


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpecError(f"{where} must be true or false, got {value!r}")
    return value


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpecError(f"{where} must be an object, got {type(value).__name__}")
    return value
