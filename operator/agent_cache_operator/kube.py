"""The operator's own Kubernetes API calls: Secrets, child objects, API discovery — as plain dicts, never PUT.

Kopf talks to the API for the watched resource; this is everything else. It wraps the official (synchronous) client,
run in worker threads, and loads credentials the way Kopf's default login does: in-cluster service account first,
then ``KUBECONFIG``/``~/.kube/config``. Updates are patches (merge or strategic merge), never replacements.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .spec import InvalidSpecError, SecretKeyRef


@dataclass(frozen=True)
class ApiKind:
    """A resource type the operator creates: ``api_version`` is ``v1`` or ``group/version``."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def describe(self) -> str:
        return f"{self.kind} ({self.api_version})"


CONFIG_MAP = ApiKind("v1", "ConfigMap", "configmaps")
GRAFANA_DASHBOARD = ApiKind("grafana.integreatly.org/v1beta1", "GrafanaDashboard", "grafanadashboards")
PROMETHEUS_RULE = ApiKind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules")


ALLOW_ANNOTATION = "agentcache.dev/allowed-agentcaches"
# The Accept header of a metadata-only read: the API server answers without the object's data.
_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class SecretMissingError(InvalidSpecError):
    """A Secret (or a key in it) that the spec names does not exist."""


class SecretNotAllowedError(InvalidSpecError):
    """A Secret the spec names has not opted in to being used by this AgentCache (see :data:`ALLOW_ANNOTATION`)."""


def secret_allows(annotations: Mapping[str, str] | None, reader: str) -> bool:
    """Whether a Secret with these annotations may be used by the AgentCache named ``reader`` (same namespace):
    its :data:`ALLOW_ANNOTATION` lists ``reader`` or is ``*`` (comma-separated, spaces ignored)."""
    allowed = {name.strip() for name in ((annotations or {}).get(ALLOW_ANNOTATION) or "").split(",")}
    return reader in allowed or "*" in allowed


def _check_allowed(where: str, name: str, reader: str, metadata: Any) -> None:
    if not secret_allows(getattr(metadata, "annotations", None), reader):
        raise SecretNotAllowedError(
            f"{where}: Secret {name!r} has not opted in to AgentCache {reader!r}: the operator reads only Secrets "
            f'annotated {ALLOW_ANNOTATION}: "{reader}" (or "*" for every AgentCache of the namespace)'
        )


class KubeApiError(Exception):
    """An API call failed (not a 404 where one is expected)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(exc: Any, what: str) -> KubeApiError:
    status = int(getattr(exc, "status", 0) or 0)
    detail = getattr(exc, "reason", None) or type(exc).__name__
    body = getattr(exc, "body", None)
    if body:
        try:
            detail = json.loads(body).get("message") or detail
        except (ValueError, AttributeError):
            pass
    return KubeApiError(status, f"{what}: HTTP {status} {detail}")


class KubeApi:
    """Async methods over ``kubernetes.client``; results are JSON-like dicts."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    @classmethod
    def from_environment(cls) -> KubeApi:
        from kubernetes import client, config

        configuration = client.Configuration()
        in_cluster: Any = config.load_incluster_config
        kubeconfig: Any = config.load_kube_config
        try:
            in_cluster(client_configuration=configuration)
        except config.ConfigException:
            kubeconfig(client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self._api_client.close()

    async def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except ApiException as exc:
            raise _error(exc, what) from None
        except Exception as exc:  # connection errors, unexpected replies: reported and retried like API errors
            raise KubeApiError(
                0, f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc

    def _plain(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else dict(self._api_client.sanitize_for_serialization(obj))

    # ── Secrets ──────────────────────────────────────────────────────────────

    async def read_secret_values(
        self, namespace: str, reader: str, refs: list[tuple[str, SecretKeyRef]]
    ) -> dict[SecretKeyRef, bytes]:
        """The values of Secret keys, for the AgentCache ``reader``; only from Secrets that opt in to it.

        Each Secret is first read as metadata only (``PartialObjectMetadata``: its data never leaves the API server)
        and its :data:`ALLOW_ANNOTATION` checked; only then is it read whole. A missing Secret or key is an
        :class:`InvalidSpecError` naming the field; a Secret without the opt-in a :class:`SecretNotAllowedError`.
        """
        import base64

        secrets: dict[str, dict[str, str] | None] = {}
        values: dict[SecretKeyRef, bytes] = {}
        for where, ref in refs:
            if ref.name not in secrets:
                secrets[ref.name] = await self._read_allowed_secret(namespace, reader, where, ref.name)
            data = secrets[ref.name]
            if data is None:
                raise SecretMissingError(f"{where}: Secret {ref.name!r} not found in namespace {namespace!r}")
            if ref.key not in data:
                raise SecretMissingError(f"{where}: Secret {ref.name!r} has no key {ref.key!r}")
            values[ref] = base64.b64decode(data[ref.key])
        return values

    async def _read_allowed_secret(self, namespace: str, reader: str, where: str, name: str) -> dict[str, str] | None:
        what = f"read Secret {namespace}/{name}"
        read = self._core.read_namespaced_secret
        try:
            meta = await self._call(what, read, name, namespace, _headers={"Accept": _METADATA_ONLY})
            _check_allowed(where, name, reader, meta.metadata)
            secret = await self._call(what, read, name, namespace)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            return None
        _check_allowed(where, name, reader, secret.metadata)  # the opt-in may have gone in between
        return dict(secret.data or {})

    # ── discovery ────────────────────────────────────────────────────────────

    async def serves(self, kind: ApiKind) -> bool:
        """Whether the API server serves this resource type (its CRD is installed)."""
        if not kind.group:
            return True
        try:
            listing = await self._call(
                f"discover {kind.api_version}", self._custom.get_api_resources, kind.group, kind.version
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        resources = self._plain(listing).get("resources") or []
        return any(resource.get("name") == kind.plural for resource in resources)

    # ── objects ──────────────────────────────────────────────────────────────

    async def _on_custom(self, what: str, verb: str, kind: ApiKind, namespace: str, *rest: Any) -> Any:
        """``CustomObjectsApi.<verb>_namespaced_custom_object`` for ``kind`` (group, version, plural filled in)."""
        method = getattr(self._custom, f"{verb}_namespaced_custom_object")
        return await self._call(what, method, kind.group, kind.version, namespace, kind.plural, *rest)

    async def get(self, kind: ApiKind, namespace: str, name: str) -> dict[str, Any] | None:
        what = f"read {kind.kind} {namespace}/{name}"
        try:
            if kind == CONFIG_MAP:
                return self._plain(await self._call(what, self._core.read_namespaced_config_map, name, namespace))
            return self._plain(await self._on_custom(what, "get", kind, namespace, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, kind: ApiKind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        what = f"create {kind.kind} {namespace}/{body['metadata']['name']}"
        if kind == CONFIG_MAP:
            return self._plain(await self._call(what, self._core.create_namespaced_config_map, namespace, body))
        return self._plain(await self._on_custom(what, "create", kind, namespace, body))

    async def patch(self, kind: ApiKind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch (strategic merge for ConfigMaps, which is the same for the maps we touch)."""
        what = f"patch {kind.kind} {namespace}/{name}"
        if kind == CONFIG_MAP:
            return self._plain(await self._call(what, self._core.patch_namespaced_config_map, name, namespace, patch))
        return self._plain(await self._on_custom(what, "patch", kind, namespace, name, patch))

    async def delete(self, kind: ApiKind, namespace: str, name: str) -> bool:
        """True if it existed."""
        what = f"delete {kind.kind} {namespace}/{name}"
        try:
            if kind == CONFIG_MAP:
                await self._call(what, self._core.delete_namespaced_config_map, name, namespace)
            else:
                await self._on_custom(what, "delete", kind, namespace, name)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True
