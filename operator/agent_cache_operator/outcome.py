"""What a reconciliation of one AgentCache produced: Events to post, a status patch and, when it failed, whether a
retry can help — and the resource it was about, as plain values. Nothing here depends on Kopf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .children import Owner

EventType = Literal["Normal", "Warning"]
METRIC_RESULTS = {
    "InvalidSpec": "invalid_spec",
    "ValkeyUnavailable": "valkey_unavailable",
    "AuthenticationFailed": "authentication_failed",
    "PermissionDenied": "permission_denied",
    "TLSHandshakeFailed": "tls_failed",
    "PrefixConflict": "conflict",
    "SecretNotAllowed": "secret_not_allowed",
    "CleanupAbandoned": "cleanup_abandoned",
}


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    retryable: bool

    @property
    def metric_result(self) -> str:
        return METRIC_RESULTS.get(self.reason, "error")


@dataclass
class SyncResult:
    """``failure``: the handler failed (retry when ``retryable``). ``abandoned``: a deletion went ahead without
    finishing its cleanup (the finalizer goes; metrics and a Warning say what was left behind)."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    failure: Failure | None = None
    abandoned: Failure | None = None


def source_of(namespace: str, name: str) -> str:
    return f"operator:{namespace}/{name}"


@dataclass(frozen=True)
class Resource:
    name: str
    namespace: str
    uid: str
    generation: int | None
    status: Mapping[str, Any]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Resource:
        meta = body.get("metadata") or {}
        return cls(
            name=str(meta.get("name")),
            namespace=str(meta.get("namespace")),
            uid=str(meta.get("uid")),
            generation=meta.get("generation"),
            status=body.get("status") or {},
        )

    @property
    def owner(self) -> Owner:
        return Owner(self.name, self.namespace, self.uid)

    @property
    def source(self) -> str:
        return source_of(self.namespace, self.name)
