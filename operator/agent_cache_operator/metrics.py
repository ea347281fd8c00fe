"""The operator's own Prometheus metrics, in a registry of its own (served on ``--metrics-port``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PREFIX = "agent_cache_operator"


class Failed(Protocol):
    @property
    def reason(self) -> str: ...
    @property
    def metric_result(self) -> str: ...


RESULTS = (
    "success",
    "invalid_spec",
    "valkey_unavailable",
    "authentication_failed",
    "permission_denied",
    "tls_failed",
    "conflict",
    "error",
)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Reconciliations of AgentCache resources, by trigger and result.",
            ["trigger", "result"],
            registry=self.registry,
        )
        self.failures = Counter(
            f"{PREFIX}_reconcile_failures",
            "Reconciliations that did not succeed, by condition reason.",
            ["reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Time to reconcile one AgentCache (Valkey and Kubernetes API calls included).",
            ["trigger"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.config_pushes = Counter(
            f"{PREFIX}_config_pushes",
            "Config writes to Valkey (a new version, or a re-assertion after drift).",
            ["reason"],
            registry=self.registry,
        )
        self.managed = Gauge(
            f"{PREFIX}_managed_caches",
            "AgentCache resources this operator currently manages.",
            registry=self.registry,
        )
        self._managed: set[str] = set()
        self._lock = threading.Lock()
        self._server: Any = None

    @contextmanager
    def reconcile(self, trigger: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.duration.labels(trigger).observe(time.perf_counter() - started)

    def result(self, trigger: str, failure: Failed | None) -> None:
        """Count one reconciliation: a success, or a failure with its result label and condition reason."""
        if failure is None:
            self.reconciles.labels(trigger, "success").inc()
        else:
            self.reconciles.labels(trigger, failure.metric_result).inc()
            self.failures.labels(failure.reason).inc()

    def manage(self, uid: str) -> None:
        with self._lock:
            self._managed.add(uid)
            self.managed.set(len(self._managed))

    def forget(self, uid: str) -> None:
        with self._lock:
            self._managed.discard(uid)
            self.managed.set(len(self._managed))

    def managed_count(self) -> int:
        with self._lock:
            return len(self._managed)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` from a background thread; once (the command serves it before Kopf's startup handler
        asks again). Raises OSError when the port is taken."""
        if self._server is not None:
            return
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
