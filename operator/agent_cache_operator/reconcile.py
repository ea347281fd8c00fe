"""Reconciliation: one AgentCache resource → its config in Valkey, its monitoring children, its status.

The decisions are pure and live elsewhere (``spec``: what the resource asks for; ``children``: what to deploy;
``status``: what to report). This module does the I/O in a fixed order and turns every outcome into a
:class:`~agent_cache_operator.outcome.SyncResult` — a status patch, Events to post and, when it failed, whether
retrying can help — so the Kopf handlers stay a few lines each and nothing here depends on Kopf.

Order: spec (and the Secrets it names) → monitoring children (Kubernetes only, so a Valkey outage does not hold back
the dashboards) → config (``read_config`` first: a write happens only when Valkey's copy is missing or different,
which is how drift after a restart or a flush is noticed and reported) → live stats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent_cache import AgentCacheError, ConfigurationError
from agent_cache.config import apply_config, delete_config, list_instances, read_config

from .children import Bundle, Child, MonitoringPlan, Owner, child_name, owned_by, plan_monitoring, update_patch
from .connection import (
    ClientCache,
    ConnectionOptions,
    cache_view,
    classify_failure,
    connection_options,
    read_config_or_none,
    redact,
)
from .kube import (
    CONFIG_MAP,
    GRAFANA_DASHBOARD,
    PROMETHEUS_RULE,
    ApiKind,
    KubeApi,
    KubeApiError,
    SecretMissingError,
    SecretNotAllowedError,
)
from .memory_status import read_memory_condition
from .metrics import OperatorMetrics
from .outcome import Event, EventType, Failure, Resource, SyncResult
from .spec import AgentCacheSpec, CleanupTarget, InvalidSpecError, ValkeySpec, parse_cleanup_target, parse_spec
from .status import (
    ALERTS_READY,
    CONFIG_SYNCED,
    DASHBOARDS_READY,
    READY,
    Condition,
    changed,
    instances_status,
    merge_conditions,
    now_rfc3339,
    ready_condition,
    replacing,
    stats_status,
    status_patch,
)

log = logging.getLogger("agent_cache_operator")


class Reconciler:
    """Reconciles resources one at a time per resource: Kopf runs a resource's timer concurrently with its change
    and deletion handlers, and a resync that read the body before a deletion must not write the config back after
    the deletion removed it."""

    def __init__(
        self,
        kube: KubeApi,
        clients: ClientCache,
        bundle: Bundle,
        metrics: OperatorMetrics,
        *,
        stats_interval_s: float = 150.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.clients = clients
        self.bundle = bundle
        self.metrics = metrics
        self.stats_interval_s = stats_interval_s
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._deleted: set[str] = set()
        self._stats_read_at: dict[str, float] = {}

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    # ── create / update / resume / timer ─────────────────────────────────────

    async def sync(self, body: Mapping[str, Any]) -> SyncResult:
        uid = Resource.of(body).uid
        async with self._lock(uid):
            if uid in self._deleted:
                return SyncResult()  # a stale resync of a resource whose deletion has been handled
            return await self._sync(body)

    async def _sync(self, body: Mapping[str, Any]) -> SyncResult:
        resource = Resource.of(body)
        self.metrics.manage(resource.uid)
        conditions: list[Condition] = []
        events: list[Event] = []
        desired: dict[str, Any] = {"observedGeneration": resource.generation}
        try:
            spec = parse_spec(body.get("spec"), resource.name, recorded_prefix=resource.status.get("prefix"))
            desired["prefix"] = spec.prefix
            options = await self._connection(resource, spec.valkey)
        except SecretNotAllowedError as exc:  # before a connection is even built: nothing reaches the host
            await self.clients.discard(resource.uid)  # nor through a client built before the opt-in was withdrawn
            return self._failed(resource, desired, Failure("SecretNotAllowed", str(exc), retryable=False))
        except InvalidSpecError as exc:
            return self._failed(resource, desired, Failure("InvalidSpec", str(exc), retryable=False))
        except KubeApiError as exc:
            return self._failed(resource, desired, Failure("KubernetesApiError", str(exc), retryable=True))

        plan = await self._apply_monitoring(resource, spec, events)
        conditions += [c for c in (plan.dashboards, plan.alerts) if c is not None]
        if plan.complete:  # after a discovery or bundle failure, keep the record of what exists
            desired["monitoring"] = plan.status()

        failure: Failure | None = None
        try:
            client = await self.clients.get(resource.uid, options)
            version = await self._push_config(client, resource, spec, events)
        except _PrefixConflictError as exc:
            failure = Failure("PrefixConflict", str(exc), retryable=False)
        except (AgentCacheError, OSError) as exc:
            valkey_failure = classify_failure(exc, spec.valkey.endpoint(), options.secrets())
            failure = Failure(valkey_failure.reason, valkey_failure.message, retryable=True)
        if failure is not None:
            conditions.append(Condition(CONFIG_SYNCED, "False", failure.reason, failure.message))
        else:
            desired["configVersion"] = version
            conditions.append(
                Condition(
                    CONFIG_SYNCED,
                    "True",
                    "Applied",
                    f"config version {version} is live in Valkey at {spec.valkey.endpoint()} (prefix {spec.prefix})",
                )
            )
            conditions += await self._read_live_stats(client, resource, spec, version, desired)

        by_type = {c.type: c for c in conditions}
        conditions.insert(
            0, ready_condition(by_type[CONFIG_SYNCED], by_type.get(DASHBOARDS_READY), by_type.get(ALERTS_READY))
        )
        return self._result(resource, desired, conditions, events, failure, options)

    async def _connection(self, resource: Resource, valkey: ValkeySpec) -> ConnectionOptions:
        values = await self.kube.read_secret_values(resource.namespace, resource.name, valkey.secret_refs())
        try:
            return connection_options(valkey, values)
        except UnicodeDecodeError:
            raise InvalidSpecError("spec.valkey: a username or password in its Secret is not UTF-8 text") from None

    async def _push_config(self, client: Any, resource: Resource, spec: AgentCacheSpec, events: list[Event]) -> str:
        """Write the config if Valkey's copy is missing or differs; returns the version now live."""
        version = spec.config.version
        try:
            current = await read_config(client, spec.prefix)
        except ConfigurationError:
            current = None  # malformed: overwrite it
            current_version: str | None = "malformed"
        else:
            current_version = None if current is None else current.version
            if current is not None and current.source.startswith("operator:") and current.source != resource.source:
                raise _PrefixConflictError(
                    f"prefix {spec.prefix!r} in Valkey at {spec.valkey.endpoint()} is already managed by "
                    f"{current.source.removeprefix('operator:')}; two AgentCaches must not share a prefix on one "
                    "Valkey (this one retries at every resync, in case the other goes away)"
                )
        if current is not None and current.version == version and current.source == resource.source:
            return version
        await apply_config(client, spec.prefix, spec.config, resource.source)
        recorded = resource.status.get("configVersion")
        if current_version is None and recorded == version:
            reason, message = "ConfigReasserted", f"config version {version} was missing from Valkey; re-applied it"
            self.metrics.config_pushes.labels("drift").inc()
        else:
            reason, message = "ConfigApplied", f"wrote config version {version} to Valkey (prefix {spec.prefix})"
            self.metrics.config_pushes.labels("change").inc()
        events.append(Event("Normal", reason, message))
        log.info("%s/%s: %s", resource.namespace, resource.name, message)
        return version

    async def _read_live_stats(
        self, client: Any, resource: Resource, spec: AgentCacheSpec, version: str, desired: dict[str, Any]
    ) -> list[Condition]:
        """The figures ``kubectl get`` shows, refreshed at most once per ``stats_interval_s`` per resource: they
        change with every request, and a status write per resync would churn the API server and every watcher
        (Prometheus has the live numbers) — the MemoryPolicy condition (from INFO) with them. Best effort: a failure
        here keeps the previous figures and condition."""
        now = self._clock()
        last = self._stats_read_at.get(resource.uid)
        if last is not None and now - last < self.stats_interval_s:
            return []
        try:
            async with cache_view(client, spec.prefix) as cache:
                stats = stats_status(await cache.stats())
                memory = await read_memory_condition(cache.backend, spec.valkey.endpoint())
            instances = instances_status(await list_instances(client, spec.prefix), version)
        except (AgentCacheError, OSError) as exc:
            log.debug("could not read the live stats of %s: %s", spec.prefix, type(exc).__name__)
            return []
        self._stats_read_at[resource.uid] = now
        desired["stats"] = replacing(resource.status.get("stats"), stats)
        desired["instances"] = instances
        return [memory]

    # ── monitoring children ──────────────────────────────────────────────────

    async def _apply_monitoring(self, resource: Resource, spec: AgentCacheSpec, events: list[Event]) -> MonitoringPlan:
        try:
            served = frozenset(
                [CONFIG_MAP] + [kind for kind in (GRAFANA_DASHBOARD, PROMETHEUS_RULE) if await self.kube.serves(kind)]
            )
        except KubeApiError as exc:
            return _monitoring_failed("DiscoveryFailed", f"cannot list the cluster's API resources: {exc}")
        try:
            plan = plan_monitoring(
                spec, resource.owner, served=served, bundle=self.bundle, recorded=resource.status.get("monitoring")
            )
        except Exception as exc:  # the bundle is code of its own; its failure must not stop the config
            log.exception("%s/%s: the observability bundle failed", resource.namespace, resource.name)
            return _monitoring_failed("BundleError", f"building the dashboards and rules failed: {exc!r}")

        failed: dict[str, str] = {}
        for child in plan.desired:
            condition = ALERTS_READY if child.kind == PROMETHEUS_RULE else DASHBOARDS_READY
            try:
                outcome = await self._upsert(resource.owner, child)
            except KubeApiError as exc:
                failed.setdefault(condition, str(exc))
                continue
            if outcome == "conflict":
                failed.setdefault(
                    condition,
                    f"{child.kind.kind} {child.name} exists and is not owned by this AgentCache; delete or rename it",
                )
            elif outcome:
                events.append(Event("Normal", outcome, f"{outcome} {child.kind.kind} {child.name}"))
        for kind, name in plan.absent:
            try:
                actual = await self.kube.get(kind, resource.namespace, name)
                if actual is not None and owned_by(actual, resource.owner):
                    await self.kube.delete(kind, resource.namespace, name)
                    events.append(Event("Normal", "Deleted", f"Deleted {kind.kind} {name} (no longer wanted)"))
            except KubeApiError as exc:
                failed.setdefault(ALERTS_READY if kind == PROMETHEUS_RULE else DASHBOARDS_READY, str(exc))
        dashboards, alerts = plan.dashboards, plan.alerts
        if DASHBOARDS_READY in failed:
            dashboards = Condition(DASHBOARDS_READY, "False", "ApplyFailed", failed[DASHBOARDS_READY])
        if ALERTS_READY in failed:
            alerts = Condition(ALERTS_READY, "False", "ApplyFailed", failed[ALERTS_READY])
        return MonitoringPlan(plan.desired, plan.absent, dashboards, alerts, complete=True)

    async def _upsert(self, owner: Owner, child: Child) -> str:
        """Create or patch one child: "Created", "Updated", "" (already right) or "conflict" (not ours)."""
        actual = await self.kube.get(child.kind, owner.namespace, child.name)
        if actual is None:
            await self.kube.create(child.kind, owner.namespace, child.manifest)
            return "Created"
        if not owned_by(actual, owner):
            return "conflict"
        patch = update_patch(actual, child)
        if patch is None:
            return ""
        await self.kube.patch(child.kind, owner.namespace, child.name, patch)
        return "Updated"

    # ── delete ───────────────────────────────────────────────────────────────

    async def cleanup(self, body: Mapping[str, Any], *, give_up: bool) -> SyncResult:
        """Remove the config (and the data with ``deletionPolicy: Delete``) and the children.

        Never a silent success: a failure — Valkey unreachable, a Kubernetes API error, credentials gone — holds the
        finalizer (``Ready=False``, reason ``CleanupBlocked``, a Warning) and is retried until ``give_up``; then the
        deletion goes ahead with a ``CleanupAbandoned`` Warning saying what stays in Valkey, so a Valkey or a Secret
        gone for good cannot block the resource (or its namespace) forever.
        """
        uid = Resource.of(body).uid
        async with self._lock(uid):
            result = await self._cleanup(body, give_up=give_up)
            if result.failure is None:
                self._deleted.add(uid)
                self._locks.pop(uid, None)
            return result

    async def _cleanup(self, body: Mapping[str, Any], *, give_up: bool) -> SyncResult:
        resource = Resource.of(body)
        events: list[Event] = []
        written = resource.status.get("configVersion") is not None
        try:
            spec = parse_cleanup_target(body.get("spec"), resource.name, recorded_prefix=resource.status.get("prefix"))
        except InvalidSpecError as exc:
            if written:  # the spec broke after its config reached Valkey: fixing spec.valkey lets the cleanup finish
                return await self._cleanup_blocked(resource, None, events, "InvalidSpec", str(exc), give_up)
            events.append(Event("Normal", "CleanupSkipped", f"no config was ever written to Valkey ({exc})"))
            return await self._finish_cleanup(resource, events, give_up=give_up)
        secrets: list[str] = []
        try:
            options = await self._connection(resource, spec.valkey)
        except KubeApiError as exc:
            return await self._cleanup_blocked(resource, spec, events, "KubernetesApiError", str(exc), give_up)
        except InvalidSpecError as exc:  # a Secret or key gone (a namespace being deleted), or its opt-in withdrawn
            gone = isinstance(exc, SecretMissingError)  # a withdrawn opt-in forbids even the credentials held
            client = await self.clients.remembered(resource.uid, spec.valkey) if gone else None
            if client is None:
                if not written and spec.deletion_policy == "Retain":
                    events.append(Event("Normal", "CleanupSkipped", f"no config was ever written to Valkey ({exc})"))
                    return await self._finish_cleanup(resource, events, give_up=give_up)
                return await self._cleanup_blocked(resource, spec, events, "CredentialsUnavailable", str(exc), give_up)
            log.info("%s/%s: cleaning up with the last sync's connection: %s", resource.namespace, resource.name, exc)
        else:
            secrets = options.secrets()
            client = await self.clients.get(resource.uid, options)
        try:
            await self._clean_valkey(client, resource, spec, events)
        except (AgentCacheError, OSError) as exc:
            failure = classify_failure(exc, spec.valkey.endpoint(), secrets)
            return await self._cleanup_blocked(resource, spec, events, failure.reason, failure.message, give_up)
        return await self._finish_cleanup(resource, events, give_up=give_up)

    async def _clean_valkey(self, client: Any, resource: Resource, spec: CleanupTarget, events: list[Event]) -> None:
        current = await read_config_or_none(client, spec.prefix)
        ours = current is None or current.source == resource.source
        if not ours:  # another AgentCache manages this prefix (see PrefixConflict): leave its config and data
            events.append(Event("Normal", "CleanupSkipped", f"prefix {spec.prefix} is managed by {current.source}"))
            return
        await delete_config(client, spec.prefix)
        events.append(Event("Normal", "ConfigDeleted", f"removed config of prefix {spec.prefix} from Valkey"))
        if spec.deletion_policy == "Delete":
            async with cache_view(client, spec.prefix) as cache:
                deleted = await cache.flush()
            events.append(Event("Normal", "DataDeleted", f"deleted {deleted} keys of prefix {spec.prefix}"))

    async def _cleanup_blocked(
        self,
        resource: Resource,
        spec: CleanupTarget | None,
        events: list[Event],
        reason: str,
        detail: str,
        give_up: bool,
    ) -> SyncResult:
        """``spec`` None: the spec does not say where the cache is (only ``status.prefix`` is known)."""
        if spec is None:
            where = f"the config of prefix {resource.status.get('prefix')} in its Valkey"
        else:
            left = "config and cached data" if spec.deletion_policy == "Delete" else "config"
            where = f"the {left} of prefix {spec.prefix} in Valkey at {spec.valkey.endpoint()}"
        if give_up:
            message = f"gave up cleaning up, leaving {where} behind: {detail}"
            log.error("%s/%s: %s", resource.namespace, resource.name, message)
            events.append(Event("Warning", "CleanupAbandoned", message))
            result = await self._finish_cleanup(resource, events, give_up=True)
            result.abandoned = Failure("CleanupAbandoned", message, retryable=False)
            return result
        message = f"cannot remove {where} yet, retrying: {detail}"
        blocked = Condition(READY, "False", "CleanupBlocked", message)
        existing = resource.status.get("conditions")
        if changed(existing, [blocked]):
            events.append(Event("Warning", "CleanupBlocked", message))
        conditions = merge_conditions(existing, [blocked], resource.generation, now_rfc3339())
        status = status_patch(resource.status, {"conditions": conditions})
        return SyncResult(status=status, events=events, failure=Failure(reason, message, retryable=True))

    async def _finish_cleanup(self, resource: Resource, events: list[Event], *, give_up: bool) -> SyncResult:
        """Delete the children (owner references let the garbage collector do it too; this makes it immediate),
        then forget the resource. A failed deletion is retried like the rest, until ``give_up``."""
        failed = await self._delete_children(resource)
        if failed and not give_up:
            detail = f"could not delete {failed}"
            return SyncResult(events=events, failure=Failure("KubernetesApiError", detail, retryable=True))
        await self._forget(resource)
        return SyncResult(events=events)

    async def _delete_children(self, resource: Resource) -> str:
        """The children that could not be deleted (empty when all are gone)."""
        recorded = resource.status.get("monitoring") or {}
        targets: list[tuple[ApiKind, str]] = [
            (CONFIG_MAP, child_name(resource.name, "dashboards")),
            (PROMETHEUS_RULE, child_name(resource.name, "alerts")),
        ] + [(GRAFANA_DASHBOARD, str(name)) for name in recorded.get("grafanaDashboards") or []]
        failed = []
        for kind, name in targets:
            try:
                actual = await self.kube.get(kind, resource.namespace, name)
                if actual is not None and owned_by(actual, resource.owner):
                    await self.kube.delete(kind, resource.namespace, name)
            except KubeApiError as exc:
                log.warning("%s/%s: could not delete %s %s: %s", resource.namespace, resource.name, kind, name, exc)
                failed.append(str(exc))
        return "; ".join(failed)

    async def _forget(self, resource: Resource) -> None:
        await self.clients.discard(resource.uid)
        self._stats_read_at.pop(resource.uid, None)
        self.metrics.forget(resource.uid)

    # ── results ──────────────────────────────────────────────────────────────

    def _failed(self, resource: Resource, desired: dict[str, Any], failure: Failure) -> SyncResult:
        conditions = [
            Condition("Ready", "False", failure.reason, failure.message),
            Condition(CONFIG_SYNCED, "False", failure.reason, failure.message),
        ]
        return self._result(resource, desired, conditions, [], failure, None)

    def _result(
        self,
        resource: Resource,
        desired: dict[str, Any],
        conditions: list[Condition],
        events: list[Event],
        failure: Failure | None,
        options: ConnectionOptions | None,
    ) -> SyncResult:
        existing = resource.status.get("conditions")
        desired["conditions"] = merge_conditions(existing, conditions, resource.generation, now_rfc3339())
        for condition in changed(existing, conditions):
            if condition.type == "Ready" and condition.is_true:
                events.append(Event("Normal", "Ready", condition.message))
            elif condition.type != "Ready":
                kind: EventType = "Normal" if condition.is_true else "Warning"
                events.append(Event(kind, condition.reason, f"{condition.type}: {condition.message}"))
        secrets = options.secrets() if options is not None else []
        events = [Event(e.type, e.reason, redact(e.message, secrets)) for e in events]
        return SyncResult(status=status_patch(resource.status, desired), events=events, failure=failure)


class _PrefixConflictError(Exception):
    pass


def _monitoring_failed(reason: str, message: str) -> MonitoringPlan:
    return MonitoringPlan(
        dashboards=Condition(DASHBOARDS_READY, "False", reason, message),
        alerts=Condition(ALERTS_READY, "False", reason, message),
    )
