"""A Kubernetes API emulator good enough for Kopf and kubectl: kmock's ``KubernetesEmulator`` with its gaps closed.

No kube-apiserver can run on the CI machines (see TESTING.md, "Kubernetes API"). kmock 0.8 serves a stateful
in-memory API over real HTTP, but Kopf and kubectl trip over seven gaps, closed here:

1. objects get ``uid``, ``creationTimestamp``, ``resourceVersion`` (one global counter, like etcd's revision) and
   ``generation`` (bumped only when something outside ``metadata``/``status`` changes) — Kopf's finalizer JSON-patch
   ``test``s the resourceVersion;
2. a failed JSON-patch ``test`` (or any unappliable patch) answers 422, so Kopf retries instead of failing;
3. ``generateName`` gets a random suffix (Kopf's Events are all ``generateName``-only);
4. list responses carry ``kind``/``apiVersion`` and a real ``resourceVersion`` (``kubectl get`` needs them);
5. watches honour ``?resourceVersion=``: every change is kept in a per-resource history, a watch replays what is newer
   and subscribes to live changes under the same lock that records them, so nothing falls between the two (kmock
   replays a snapshot and subscribes afterwards: changes in between are lost and Kopf stalls);
6. watch streams are ``application/json`` (kmock's ``application/octet-stream`` breaks ``kubectl get -w``);
7. ``/api/v1`` discovery says ``groupVersion: v1`` (kmock says ``/v1``, which breaks ``kubectl get events``).

Beyond those, the behaviour the operator's tests rely on, as a real API server does it:

* applying a ``CustomResourceDefinition`` registers its resource (discovery, defaults, status subresource, printer
  columns); deleting it removes the resource and its objects — so tests install CRDs with ``kubectl apply`` on the
  emulator and on a real cluster alike;
* the ``status`` subresource: ``status`` is ignored on create and in main-resource patches, and a ``/status`` patch
  changes nothing else; a no-op patch changes nothing and emits no watch event;
* ``kubectl get`` asks for server-side printing (``as=Table``): tables are built from the CRD's printer columns;
* equality label selectors and ``metadata.name``/``metadata.namespace`` field selectors on lists and watches;
  Secrets' ``stringData`` is folded into ``data``.

Reads with ``Accept: ...;as=PartialObjectMetadata`` answer with the object's metadata only, as a real API server
does. For fault tests, :meth:`KubernetesAPIEmulator.inject_fault` makes the next matching requests fail with an HTTP
error, and :meth:`KubernetesAPIEmulator.reads_of` lists how an object was read (whole or metadata only). With
:meth:`KubernetesAPIEmulator.restrict`, requests bearing a given token are authorized against RBAC rules (a
ClusterRole's and Roles' ``rules``) and denied with 403 otherwise; every decision is recorded.

It validates nothing (the CRD's schema and CEL rules are tested apart, with jsonschema and a real CEL library), has
no garbage collector and no namespace lifecycle. The operator never uses PUT; neither does this emulator.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import importlib.resources
import json
import random
import re
import string
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import apps, enums, parsing, rendering

from agent_cache_operator.crd import apply_defaults

_HISTORY_LIMIT = 20_000
_CRD = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_SECRETS = kmock.resource("", "v1", "secrets")
_NAMESPACES = kmock.resource("", "v1", "namespaces")
_NAMESPACE_PATH = re.compile(r"/api/v1/namespaces(?:/([^/]+)(?:/(status|finalize))?)?/?")
_NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


@attrs.define(kw_only=True)
class CRDInfo:
    schema: dict[str, Any] | None
    columns: list[dict[str, Any]]
    status_subresource: bool


@attrs.define(kw_only=True)
class Fault:
    """The next ``times`` requests with this method on this resource (and name, if given) fail with ``status``."""

    method: str
    plural: str
    name: str | None
    status: int
    times: int


@attrs.define(kw_only=True)
class Access:
    """One authorization decision: the verb, ``group``, ``resource`` (with ``/subresource``), namespace, outcome."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    allowed: bool


@attrs.define(kw_only=True)
class Authorizer:
    """RBAC for the requests that bear ``token``: ``rules`` pairs a namespace (None: cluster-wide, a ClusterRole's)
    with a PolicyRule (apiGroups, resources, verbs) as written in a Role."""

    token: str
    rules: list[tuple[str | None, dict[str, Any]]]
    log: list[Access] = attrs.field(factory=list)

    def allows(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        for scope, rule in self.rules:
            if scope is not None and scope != namespace:
                continue
            if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
                if verb in rule.get("verbs", []) or "*" in rule.get("verbs", []):
                    return True
        return False


@attrs.define(kw_only=True)
class KubernetesAPIEmulator(kmock.KubernetesEmulator):
    """See the module docstring. ``objects``, ``resources`` and ``requests`` work as in kmock."""

    _revision: int = attrs.field(default=0, init=False)
    _history: dict[kmock.resource, list[tuple[int, dict[str, Any]]]] = attrs.field(
        factory=lambda: defaultdict(list), init=False
    )
    _forgotten: dict[kmock.resource, int] = attrs.field(factory=dict, init=False)
    _watchers: dict[kmock.resource, set[asyncio.Queue[dict[str, Any]]]] = attrs.field(
        factory=lambda: defaultdict(set), init=False
    )
    _crds: dict[kmock.resource, CRDInfo] = attrs.field(factory=dict, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    authorizer: Authorizer | None = attrs.field(default=None, init=False)
    closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock's load_bundled() uses the deprecated importlib.resources.read_binary; read the same file directly.
        bundled = importlib.resources.files("kmock._internal") / "resources.json.gz"
        self.resources.load_data(gzip.decompress(bundled.read_bytes()))
        # One Event resource only: kubectl would otherwise list events.k8s.io/v1, which Kopf does not post to.
        del self.resources["events.k8s.io/v1/events"]

    # ── dispatch ──────────────────────────────────────────────────────────────

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's path parser fails on ``/api/v1/namespaces[/NAME]`` (it takes NAME for a namespace scope and
        crashes without one): parse those paths here, so namespaces are an ordinary cluster-scoped resource."""
        match = _NAMESPACE_PATH.fullmatch(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        await raw_request.read()
        try:
            data = await raw_request.json()
        except ValueError:
            data = None
        name, subresource = match.group(1), match.group(2)
        parsed = parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name, subresource=subresource)
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=await raw_request.read(),
            text=await raw_request.text(),
            action=parsing.guess_k8s(parsed, enums.method(raw_request.method), dict(raw_request.query)),
            resource=_NAMESPACES,
            namespace=None,
            name=name,
            subresource=subresource,
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as exc:
            return await self._render_error(exc)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None:
            return await super()._handle(request)  # discovery and the rest of kmock
        if resource not in self.resources:
            raise _status_error(404, "NotFound", f"the server could not find the requested resource ({resource})")
        self._authorize(request, resource)
        self._fail_if_injected(request, resource)
        action = request.action
        if action == enums.action.WATCH:
            return await self._watch(request, resource)
        status = 200
        if action == enums.action.CREATE:
            payload, status = await self._create(request, resource), 201
        elif action == enums.action.UPDATE:
            payload = await self._patch(request, resource)
        elif action == enums.action.DELETE and request.name is not None:
            payload = await self._delete(request, resource)
        elif action == enums.action.LIST:
            payload = await self._list(request, resource)
        elif action == enums.action.FETCH:
            payload = await self._fetch(request, resource)
        else:
            raise _status_error(405, "MethodNotAllowed", f"{request.method} is not supported by the emulator")
        return aiohttp.web.json_response(payload, status=status)

    # ── faults and request records, for tests ────────────────────────────────

    def inject_fault(
        self, method: str, plural: str, name: str | None = None, status: int = 500, times: int = 1
    ) -> None:
        self.faults.append(Fault(method=method.upper(), plural=plural, name=name, status=status, times=times))

    def _fail_if_injected(self, request: rendering.Request, resource: kmock.resource) -> None:
        for fault in self.faults:
            if fault.times <= 0 or fault.method != request.method or fault.plural != resource.plural:
                continue
            if fault.name is not None and fault.name != request.name:
                continue
            fault.times -= 1
            reason = "InternalError" if fault.status >= 500 else "Forbidden" if fault.status == 403 else "Injected"
            raise _status_error(fault.status, reason, f"injected fault: {request.method} {resource.plural}")

    def restrict(self, token: str, rules: list[tuple[str | None, dict[str, Any]]]) -> Authorizer:
        self.authorizer = Authorizer(token=token, rules=rules)
        return self.authorizer

    def _authorize(self, request: rendering.Request, resource: kmock.resource) -> None:
        authorizer = self.authorizer
        if authorizer is None or request.headers.get("Authorization") != f"Bearer {authorizer.token}":
            return  # kubectl and the tests: an administrator
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        if method == "GET":
            verb = "watch" if request.params.get("watch") in ("true", "1") else "get" if request.name else "list"
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, method)
        plural = resource.plural or ""
        name = plural + (f"/{request.subresource}" if request.subresource else "")
        namespace = request.namespace if self.resources[resource].namespaced else None
        allowed = authorizer.allows(verb, resource.group or "", name, namespace)
        authorizer.log.append(
            Access(verb=verb, group=resource.group or "", resource=name, namespace=namespace, allowed=allowed)
        )
        if not allowed:
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            raise _status_error(
                403, "Forbidden", f'cannot {verb} resource "{name}" in API group "{resource.group}"{where}'
            )

    def reads_of(self, plural: str, namespace: str, name: str) -> list[tuple[str, str]]:
        """Each GET of this object: the client's name (User-Agent up to the first "/", e.g. "kubectl") and how it
        asked for the object, "metadata" (PartialObjectMetadata) or "whole"."""
        reads = []
        for request in self._requests:
            resource = request.resource
            if request.method != "GET" or resource is None or resource.plural != plural:
                continue
            if request.namespace == namespace and request.name == name:
                agent = request.headers.get("User-Agent", "").split("/")[0]
                reads.append((agent, "metadata" if _wants_metadata(request) else "whole"))
        return reads

    def _get_resources(self) -> list[kmock.resource]:
        # Only what is declared: kmock also counts resources of stored objects, even of a deleted CRD.
        return list(self.resources)

    # gap 7: the core group's discovery document
    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_version(request)
        if isinstance(payload, dict):
            if payload.get("groupVersion", "").startswith("/"):
                payload["groupVersion"] = payload["groupVersion"][1:]
            for entry in payload.get("resources", []):
                if "/" in entry["name"]:  # subresources carry no short names (kubectl warns about ambiguity)
                    entry.update(shortNames=[], categories=[], singularName="")
        return payload

    # ── storage and events ────────────────────────────────────────────────────

    def _key(self, resource: kmock.resource, namespace: str | None, name: str) -> tuple[Any, str | None, str]:
        namespace = namespace if self.resources[resource].namespaced else None
        return (resource, namespace, name)

    def _current(self, key: tuple[Any, str | None, str]) -> dict[str, Any] | None:
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else copy.deepcopy(obj.raw)

    def _record(self, resource: kmock.resource, kind: str, body: dict[str, Any]) -> None:
        """Append a watch event (caller holds the lock) and hand it to every live watcher."""
        event = {"type": kind, "object": copy.deepcopy(body)}
        history = self._history[resource]
        history.append((self._revision, event))
        if len(history) > _HISTORY_LIMIT:
            dropped = history[: len(history) - _HISTORY_LIMIT]
            self._forgotten[resource] = dropped[-1][0]
            del history[: len(dropped)]
        for queue in self._watchers[resource]:
            queue.put_nowait(event)

    def _stamp(self, body: dict[str, Any]) -> None:
        self._revision += 1
        body.setdefault("metadata", {})["resourceVersion"] = str(self._revision)

    def _store(self, key: tuple[Any, str | None, str], body: dict[str, Any]) -> None:
        if key in self.objects:
            self.objects[key].history.append(body)
        else:
            self.objects[key] = body

    # ── create (gaps 1, 3) ────────────────────────────────────────────────────

    async def _create(self, request: rendering.Request, resource: kmock.resource) -> dict[str, Any]:
        body = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if body is None:
            raise _status_error(400, "BadRequest", "the request body must be a JSON object")
        info = self.resources[resource]
        meta = body.setdefault("metadata", {})
        if info.namespaced:
            meta["namespace"] = request.namespace or meta.get("namespace") or "default"
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise _status_error(422, "Invalid", "metadata.name or metadata.generateName is required")
            meta["name"] = prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        crd = self._crds.get(resource)
        if crd is not None and crd.status_subresource:
            body.pop("status", None)
        if crd is not None and crd.schema is not None:
            body = apply_defaults(crd.schema, body)
            meta = body["metadata"]
        if resource == _SECRETS:
            _fold_string_data(body)
        group_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        body.setdefault("apiVersion", group_version)
        body.setdefault("kind", info.kind)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        key = self._key(resource, meta.get("namespace"), meta["name"])
        async with self._lock:
            if self._current(key) is not None:
                raise _status_error(409, "AlreadyExists", f'{resource.plural} "{meta["name"]}" already exists')
            if resource == _CRD:
                self._register_crd(body)
            self._stamp(body)
            self._store(key, body)
            self._record(resource, "ADDED", body)
        return body

    # ── patch (gaps 1, 2) ─────────────────────────────────────────────────────

    async def _patch(self, request: rendering.Request, resource: kmock.resource) -> dict[str, Any]:
        assert request.name is not None
        key = self._key(resource, request.namespace, request.name)
        content_type = request.headers.get("Content-Type", "")
        async with self._lock:
            current = self._current(key)
            if current is None:
                raise _status_error(404, "NotFound", f'{resource.plural} "{request.name}" not found')
            try:
                if isinstance(request.data, list) or "json-patch" in content_type:
                    patched = jsonpatch.apply_patch(current, request.data, in_place=False)
                elif isinstance(request.data, dict):
                    patched = _merge(current, request.data)
                else:
                    raise ValueError("the patch must be a JSON object or a JSON-patch list")
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, ValueError, TypeError) as exc:
                raise _status_error(422, "Invalid", f"the patch cannot be applied: {exc}") from None
            wanted_version = (
                (request.data or {}).get("metadata", {}).get("resourceVersion")
                if isinstance(request.data, dict)
                else None
            )
            if wanted_version is not None and wanted_version != current["metadata"]["resourceVersion"]:
                raise _status_error(409, "Conflict", "the object has been modified; please apply your changes again")
            patched = self._constrain(resource, request.subresource, current, patched)
            if resource == _SECRETS:
                _fold_string_data(patched)
            if patched == current:
                return current  # a no-op patch changes nothing, not even the resourceVersion
            self._stamp(patched)
            meta = patched["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                self._store(key, patched)
                self.objects[key].delete()
                self._record(resource, "DELETED", patched)
                self._after_delete(resource, patched)
            else:
                if resource == _CRD:
                    self._register_crd(patched)
                self._store(key, patched)
                self._record(resource, "MODIFIED", patched)
            return patched

    def _constrain(
        self, resource: kmock.resource, subresource: str | None, current: dict[str, Any], patched: dict[str, Any]
    ) -> dict[str, Any]:
        """What a real API server keeps of a patch: identity fields, the status subresource split, defaults,
        and the generation bump for changes outside metadata and status."""
        crd = self._crds.get(resource)
        status_apart = crd is not None and crd.status_subresource
        if subresource == "status":
            result = copy.deepcopy(current)
            if "status" in patched:
                result["status"] = patched["status"]
            else:
                result.pop("status", None)
            return result
        if status_apart:
            if "status" in current:
                patched["status"] = current["status"]
            else:
                patched.pop("status", None)
        meta, old_meta = patched.setdefault("metadata", {}), current["metadata"]
        for field in ("uid", "creationTimestamp", "name", "namespace", "generation", "resourceVersion"):
            if field in old_meta:
                meta[field] = old_meta[field]
        if old_meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = old_meta["deletionTimestamp"]
        if crd is not None and crd.schema is not None:
            patched = apply_defaults(crd.schema, patched)
        spec_changed = {k: v for k, v in patched.items() if k not in ("metadata", "status")} != {
            k: v for k, v in current.items() if k not in ("metadata", "status")
        }
        if spec_changed:
            patched["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        return patched

    # ── delete ────────────────────────────────────────────────────────────────

    async def _delete(self, request: rendering.Request, resource: kmock.resource) -> dict[str, Any]:
        assert request.name is not None
        key = self._key(resource, request.namespace, request.name)
        async with self._lock:
            current = self._current(key)
            if current is None:
                raise _status_error(404, "NotFound", f'{resource.plural} "{request.name}" not found')
            meta = current["metadata"]
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = _now()
                    self._stamp(current)
                    self._store(key, current)
                    self._record(resource, "MODIFIED", current)
                return current
            self._stamp(current)
            self.objects[key].delete()
            self._record(resource, "DELETED", current)
            self._after_delete(resource, current)
            return current

    def _after_delete(self, resource: kmock.resource, body: dict[str, Any]) -> None:
        if resource != _CRD:
            return
        for served in self._crd_resources(body):
            self._crds.pop(served, None)
            for key in [k for k in self.objects if k[0] == served and not self.objects[k].deleted]:
                gone = self._current(key)
                assert gone is not None
                self._stamp(gone)
                self.objects[key].delete()
                self._record(served, "DELETED", gone)
            if served in self.resources:
                del self.resources[served]

    # ── CRDs ──────────────────────────────────────────────────────────────────

    @staticmethod
    def _crd_resources(body: Mapping[str, Any]) -> list[kmock.resource]:
        spec = body.get("spec", {})
        plural = spec.get("names", {}).get("plural")
        return [
            kmock.resource(spec.get("group"), v["name"], plural) for v in spec.get("versions", []) if v.get("served")
        ]

    def _register_crd(self, body: dict[str, Any]) -> None:
        spec = body.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served"):
                continue
            served = kmock.resource(spec["group"], version["name"], names["plural"])
            subresources = set(version.get("subresources") or {})
            self.resources[served] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular") or names.get("kind", "").lower(),
                namespaced=spec.get("scope") == "Namespaced",
                verbs={"get", "list", "watch", "create", "patch", "delete", "deletecollection", "update"},
                shortnames=set(names.get("shortNames") or []),
                categories=set(names.get("categories") or []),
                subresources=subresources,
            )
            self._crds[served] = CRDInfo(
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                columns=list(version.get("additionalPrinterColumns") or []),
                status_subresource="status" in subresources,
            )
        body["status"] = {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": _now()},
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "lastTransitionTime": _now(),
                },
            ],
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")],
        }

    # ── reads (gap 4, server-side printing) ───────────────────────────────────

    def _select(self, request: rendering.Request, resource: kmock.resource) -> list[dict[str, Any]]:
        matches = _selector(request.params)
        result = []
        for (res, namespace, name), obj in self.objects.items():
            if res != resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            if request.name is not None and name != request.name:
                continue
            body = copy.deepcopy(obj.raw)
            if matches(body):
                result.append(body)
        return result

    async def _list(self, request: rendering.Request, resource: kmock.resource) -> dict[str, Any]:
        async with self._lock:
            items = self._select(request, resource)
            revision = str(self._revision)
        if _wants_table(request):
            return self._table(resource, items, revision)
        info = self.resources[resource]
        return {
            "apiVersion": f"{resource.group}/{resource.version}" if resource.group else resource.version,
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": revision},
            "items": items,
        }

    async def _fetch(self, request: rendering.Request, resource: kmock.resource) -> dict[str, Any]:
        assert request.name is not None
        async with self._lock:
            body = self._current(self._key(resource, request.namespace, request.name))
            revision = str(self._revision)
        if body is None:
            raise _status_error(404, "NotFound", f'{resource.plural} "{request.name}" not found')
        if _wants_metadata(request):
            return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": body["metadata"]}
        return self._table(resource, [body], revision) if _wants_table(request) else body

    def _table(self, resource: kmock.resource, items: list[dict[str, Any]], revision: str) -> dict[str, Any]:
        crd = self._crds.get(resource)
        columns = (
            crd.columns
            if crd is not None and crd.columns
            else [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        )
        definitions = [_NAME_COLUMN] + [
            {
                "name": c["name"],
                "type": "string" if c["type"] == "date" else c["type"],
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
            }
            for c in columns
        ]
        rows = []
        for item in items:
            cells: list[Any] = [item["metadata"]["name"]]
            for column in columns:
                value = _jsonpath(item, column["jsonPath"])
                if column["type"] == "date" and isinstance(value, str):
                    value = _age(value)
                cells.append(value)
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": item["metadata"],
                    },
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": revision},
            "columnDefinitions": definitions,
            "rows": rows,
        }

    # ── watch (gaps 5, 6) ─────────────────────────────────────────────────────

    async def _watch(self, request: rendering.Request, resource: kmock.resource) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        params = request.params
        matches = _selector(params)
        since = params.get("resourceVersion") or ""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        async with self._lock:
            if since in ("", "0"):
                initial = [{"type": "ADDED", "object": body} for body in self._select(request, resource)]
                if params.get("sendInitialEvents") == "true":
                    initial.append(_bookmark(self._revision, initial_events_end=True))
            elif int(since) < self._forgotten.get(resource, 0):
                initial = [_gone(since)]
            else:
                initial = [event for revision, event in self._history[resource] if revision > int(since)]
            self._watchers[resource].add(queue)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        table = _wants_table(request)

        def encode(event: dict[str, Any]) -> bytes:
            if table and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                rv = event["object"]["metadata"].get("resourceVersion", "")
                event = {"type": event["type"], "object": self._table(resource, [event["object"]], rv)}
            return json.dumps(event).encode() + b"\n"

        try:
            await response.prepare(raw)
            for event in initial:
                if event["type"] in ("ERROR", "BOOKMARK") or self._visible(request, event, matches):
                    await response.write(encode(event))
            if initial and initial[-1]["type"] == "ERROR":
                return response
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while not self.closing:
                if deadline is not None and loop.time() >= deadline:
                    break
                if raw.transport is None or raw.transport.is_closing():
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:
                    continue
                if self._visible(request, event, matches):
                    await response.write(encode(event))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self._watchers[resource].discard(queue)
        return response

    def _visible(self, request: rendering.Request, event: Mapping[str, Any], matches: Any) -> bool:
        meta = event.get("object", {}).get("metadata", {})
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        return bool(matches(event["object"]))


# ── helpers ───────────────────────────────────────────────────────────────────


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patches of the maps involved here behave the same)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _fold_string_data(body: dict[str, Any]) -> None:
    string_data = body.pop("stringData", None) or {}
    if string_data:
        data = body.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _wants_table(request: rendering.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _wants_metadata(request: rendering.Request) -> bool:
    return "as=PartialObjectMetadata" in request.headers.get("Accept", "")


def _selector(params: Mapping[str, str]) -> Any:
    """A predicate for ``labelSelector`` (k=v, k==v, k!=v, k, !k) and ``fieldSelector`` (metadata.name/namespace)."""
    checks = []
    for term in filter(None, (params.get("labelSelector") or "").split(",")):
        checks.append(("label", term.strip()))
    for term in filter(None, (params.get("fieldSelector") or "").split(",")):
        checks.append(("field", term.strip()))

    def field_value(body: Mapping[str, Any], path: str) -> str | None:
        value: Any = body
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return None if value is None else str(value)

    def matches(body: Mapping[str, Any]) -> bool:
        labels = body.get("metadata", {}).get("labels") or {}
        for kind, term in checks:
            match = re.fullmatch(r"(!?)([^=!]+?)(?:\s*(==|=|!=)\s*(.*))?", term)
            if match is None:
                return False
            negate, name, op, value = match.groups()
            actual = labels.get(name) if kind == "label" else field_value(body, name)
            if op is None:
                if (actual is None) != bool(negate):
                    return False
            elif op == "!=":
                if actual == value:
                    return False
            elif actual != value:
                return False
        return True

    return matches


def _jsonpath(body: Any, path: str) -> Any:
    """The subset of JSONPath that printer columns use: ``.a.b`` and ``[?(@.key=="value")]``."""
    value = body
    for name, key, expected in re.findall(r'\.([\w$-]+)|\[\?\(@\.(\w+)==["\']([^"\']*)["\']\)\]', path):
        if name:
            value = value.get(name) if isinstance(value, Mapping) else None
        else:
            items: Iterable[Any] = value if isinstance(value, list) else []
            value = next((i for i in items if isinstance(i, Mapping) and str(i.get(key)) == expected), None)
        if value is None:
            return None
    return value


def _age(timestamp: str) -> str:
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return timestamp
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _bookmark(revision: int, *, initial_events_end: bool) -> dict[str, Any]:
    annotations = {"k8s.io/initial-events-end": "true"} if initial_events_end else {}
    return {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(revision), "annotations": annotations}}}


def _gone(since: str) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Expired",
            "code": 410,
            "message": f"too old resource version: {since}",
        },
    }


class EmulatorThread:
    """The emulator served on loopback from a thread with its own event loop, so it outlives every test's loop."""

    def __init__(self) -> None:
        self.emulator: KubernetesAPIEmulator | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kubernetes-emulator", daemon=True)

    def start(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with KubernetesAPIEmulator() as emulator, apps.Server(emulator, host="127.0.0.1") as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
            emulator.closing = True
            await asyncio.sleep(0.6)  # let open watch streams see the flag and end

    def call(self, function: Any) -> Any:
        """Run ``function(emulator)`` on the emulator's loop (its state is not thread-safe)."""
        assert self._loop is not None and self.emulator is not None
        emulator = self.emulator

        async def run() -> Any:
            async with emulator._lock:
                return function(emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def write_kubeconfig(path: Any, url: str, namespace: str = "default") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace}}
        ],
        "current-context": "emulator",
    }
    path.write_text(json.dumps(config, indent=2))
