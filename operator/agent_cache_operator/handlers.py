"""The Kopf handlers: thin wrappers that call the :class:`~agent_cache_operator.reconcile.Reconciler` and translate
its result into Kopf's terms — a status patch, Events, and ``kopf.TemporaryError`` (retry with backoff: Valkey down,
wrong password) or ``kopf.PermanentError`` (an invalid spec: retrying cannot help until the spec changes).

Nothing is registered at import time: :func:`build_registry` returns a fresh ``kopf.OperatorRegistry`` bound to one
:class:`OperatorContext`, so tests can run several operators in one process and the CLI builds exactly one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from .children import Bundle
from .connection import ClientCache
from .crd import GROUP, PLURAL, VERSION
from .kube import KubeApi
from .metrics import OperatorMetrics
from .outcome import SyncResult
from .reconcile import Reconciler

FINALIZER = f"{GROUP}/finalizer"
log = logging.getLogger("agent_cache_operator")


@dataclass(frozen=True)
class OperatorOptions:
    resync_interval_s: float = 30.0
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    delete_retries: int = 5
    metrics_port: int | None = 9090
    bind_address: str = "0.0.0.0"
    # status.stats/instances refresh at most this often per resource; None: every 5 resync intervals.
    stats_interval_s: float | None = None

    @property
    def stats_refresh_s(self) -> float:
        return self.stats_interval_s if self.stats_interval_s is not None else 5 * self.resync_interval_s

    def backoff(self, retry: int) -> float:
        """Exponential backoff for retryable failures: base, 2x base, 4x base... capped at ``retry_max_s``."""
        return float(min(self.retry_max_s, self.retry_base_s * 2 ** min(retry, 20)))


@dataclass
class OperatorContext:
    options: OperatorOptions
    bundle: Bundle
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clients: ClientCache = field(default_factory=ClientCache)
    kube: KubeApi | None = None
    _reconciler: Reconciler | None = None

    @property
    def reconciler(self) -> Reconciler:
        if self._reconciler is None:
            self.kube = self.kube or KubeApi.from_environment()
            self._reconciler = Reconciler(
                self.kube, self.clients, self.bundle, self.metrics, stats_interval_s=self.options.stats_refresh_s
            )
        return self._reconciler

    async def close(self) -> None:
        await self.clients.close()
        if self.kube is not None:
            self.kube.close()
            self.kube = None
        self._reconciler = None
        self.metrics.stop()


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """Keep Kopf's bookkeeping in our own annotations and finalizer: the schema is structural, so Kopf's default
    ``status.kopf`` storage would be pruned by the API server."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "agent-cache-operator"
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # A deletion waits for a running resync to finish; Kopf re-checks every minute by default.
    settings.background.cancellation_polling = 1.0


def _post(body: kopf.Body, result: SyncResult) -> None:
    for event in result.events:
        if event.type == "Normal":
            kopf.info(body, reason=event.reason, message=event.message)
        else:
            kopf.warn(body, reason=event.reason, message=event.message)


def _apply_status(patch: kopf.Patch, result: SyncResult) -> None:
    for key, value in result.status.items():
        patch.status[key] = value


def build_registry(context: OperatorContext) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    options = context.options
    resource = (GROUP, VERSION, PLURAL)

    # A registry of our own gets none of Kopf's default login handlers: log in as Kopf would by default (in-cluster
    # service account, else KUBECONFIG) through the official client, which KubeApi uses too.
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings)
        if options.metrics_port is not None:
            context.metrics.serve(options.metrics_port, options.bind_address)
            log.info("serving operator metrics on %s:%d/metrics", options.bind_address, options.metrics_port)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await context.close()

    @kopf.on.probe(registry=registry, id="managed_caches")
    def managed_caches(**_: Any) -> int:
        return context.metrics.managed_count()

    async def reconcile(body: kopf.Body, patch: kopf.Patch, retry: int, trigger: str, *, in_timer: bool) -> None:
        with context.metrics.reconcile(trigger):
            result = await context.reconciler.sync(body)
        _apply_status(patch, result)
        _post(body, result)
        failure = result.failure
        context.metrics.result(trigger, failure)
        if failure is None:
            return
        if failure.retryable:
            raise kopf.TemporaryError(f"{failure.reason}: {failure.message}", delay=options.backoff(retry))
        if not in_timer:  # a timer just tries again at its next interval
            raise kopf.PermanentError(f"{failure.reason}: {failure.message}")

    @kopf.on.resume(*resource, registry=registry, id="sync")
    @kopf.on.create(*resource, registry=registry, id="sync")
    @kopf.on.update(*resource, registry=registry, id="sync")
    async def sync(body: kopf.Body, patch: kopf.Patch, retry: int, reason: str, **_: Any) -> None:
        await reconcile(body, patch, retry, str(getattr(reason, "value", reason)), in_timer=False)

    @kopf.timer(
        *resource,
        registry=registry,
        id="resync",
        interval=options.resync_interval_s,
        initial_delay=options.resync_interval_s,
    )
    async def resync(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        if body.metadata.get("deletionTimestamp"):
            return
        if body.status.get("observedGeneration") != body.metadata.get("generation"):
            return  # the create/update/resume handler owns a generation it has not reported yet
        await reconcile(body, patch, int(kwargs.get("retry") or 0), "timer", in_timer=True)

    @kopf.on.delete(*resource, registry=registry, id="cleanup")
    async def delete(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        give_up = retry >= options.delete_retries
        with context.metrics.reconcile("delete"):
            result = await context.reconciler.cleanup(body, give_up=give_up)
        _apply_status(patch, result)  # CleanupBlocked while the finalizer is held
        _post(body, result)
        failure = result.failure
        context.metrics.result("delete", failure or result.abandoned)
        if failure is not None:
            raise kopf.TemporaryError(
                f"{failure.reason}: {failure.message} (attempt {retry + 1} of {options.delete_retries + 1})",
                delay=options.backoff(retry),
            )

    return registry
