"""Valkey connections built from a spec and its Secrets: one client per resource, replaced when they change.

Credentials are held only in memory (and, for a client certificate, in a private temporary file that valkey-py needs
a path for, removed with the client). They never appear in a repr, a log line, an Event or the status: error
messages are built from the endpoint and the error class, and :func:`redact` strikes any secret value that a server
or library might still have echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from agent_cache import (
    AgentCache,
    AgentCacheOptions,
    ConfigRefreshOptions,
    ConfigurationError,
    DiscoveryOptions,
    TelemetryOptions,
)
from agent_cache.config import read_config

from .spec import SecretKeyRef, ValkeySpec

SecretValues = Mapping[SecretKeyRef, bytes]

FailureReason = Literal["ValkeyUnavailable", "AuthenticationFailed", "PermissionDenied", "TLSHandshakeFailed"]

_CONNECT_TIMEOUT_S = 5.0
_COMMAND_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ConnectionOptions:
    """What a client is built from. ``fingerprint`` changes whenever any of it (a credential included) does."""

    valkey: ValkeySpec
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(repr(self.valkey).encode())
        for part in (self.username, self.password, self.ca_pem):
            digest.update(b"\0" + (part or "").encode())
        for blob in (self.cert_pem, self.key_pem):
            digest.update(b"\0" + (blob or b""))
        return digest.hexdigest()

    def secrets(self) -> list[str]:
        """The sensitive strings, for :func:`redact`."""
        values = [self.password, self.username]
        return [value for value in values if value]


def connection_options(valkey: ValkeySpec, values: SecretValues) -> ConnectionOptions:
    """Pure: the spec plus the Secret values it references (see :meth:`ValkeySpec.secret_refs`)."""

    def text(ref: SecretKeyRef | None) -> str | None:
        return None if ref is None else values[ref].decode()

    def blob(ref: SecretKeyRef | None) -> bytes | None:
        return None if ref is None else values[ref]

    return ConnectionOptions(
        valkey=valkey,
        username=text(valkey.username),
        password=text(valkey.password),
        ca_pem=text(valkey.tls.ca),
        cert_pem=blob(valkey.tls.cert),
        key_pem=blob(valkey.tls.key),
    )


def client_kwargs(options: ConnectionOptions, cert_paths: tuple[str, str] | None = None) -> dict[str, Any]:
    """Pure: keyword arguments for ``Valkey``/``ValkeyCluster`` (``from_url`` when there is a URL)."""
    valkey = options.valkey
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": _CONNECT_TIMEOUT_S,
        "socket_timeout": _COMMAND_TIMEOUT_S,
        "decode_responses": False,
    }
    if valkey.url is None:
        kwargs["host"] = valkey.host
        kwargs["port"] = valkey.port
    if valkey.db is not None and not valkey.cluster:
        kwargs["db"] = valkey.db
    if options.username is not None:
        kwargs["username"] = options.username
    if options.password is not None:
        kwargs["password"] = options.password
    tls = valkey.tls
    if tls.enabled:
        if valkey.url is None:
            kwargs["ssl"] = True
        kwargs["ssl_cert_reqs"] = "none" if tls.insecure_skip_verify else "required"
        kwargs["ssl_check_hostname"] = not tls.insecure_skip_verify
        if options.ca_pem is not None:
            kwargs["ssl_ca_data"] = options.ca_pem
        if cert_paths is not None:
            kwargs["ssl_certfile"], kwargs["ssl_keyfile"] = cert_paths
    return kwargs


def build_client(options: ConnectionOptions, cert_paths: tuple[str, str] | None = None) -> Any:
    """A ``valkey.asyncio.Valkey`` (or ``ValkeyCluster`` with ``cluster: true``); connects lazily."""
    from valkey.asyncio import Valkey
    from valkey.asyncio.cluster import ValkeyCluster

    kwargs = client_kwargs(options, cert_paths)
    url = options.valkey.url
    if options.valkey.cluster:
        if url is not None:
            return ValkeyCluster.from_url(url, **kwargs)
        return ValkeyCluster(**kwargs)
    if url is not None:
        return Valkey.from_url(url, **kwargs)
    return Valkey(**kwargs)


# ── failures ────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ValkeyFailure:
    reason: FailureReason
    message: str


_AUTH_CLASSES = {"AuthenticationError", "AuthenticationWrongNumberOfArgsError"}
_AUTH_REPLIES = ("WRONGPASS", "NOAUTH", "invalid username-password pair", "Authentication required")


def classify_failure(exc: BaseException, endpoint: str, secrets: Iterable[str] = ()) -> ValkeyFailure:
    """Why Valkey refused us, as a condition reason and a message safe to publish."""
    chain = list(_chain(exc))
    names = {cls.__name__ for error in chain for cls in type(error).__mro__}
    text = " ".join(str(error) for error in chain)
    if names & _AUTH_CLASSES or any(reply in text for reply in _AUTH_REPLIES):
        return ValkeyFailure(
            "AuthenticationFailed",
            f"Valkey at {endpoint} rejected the credentials (check spec.valkey.passwordSecretRef and "
            "usernameSecretRef and the Secrets they name)",
        )
    if "NoPermissionError" in names or "NOPERM" in text:
        return ValkeyFailure(
            "PermissionDenied",
            f"Valkey at {endpoint} denied a command to this user: "
            f"{redact(_first_line(chain[-1]), secrets)} (the ACL user needs the cache's keys and PUBLISH)",
        )
    detail = redact(_first_line(chain[-1]), secrets)
    if "SSLError" in names or "SSLCertVerificationError" in names:
        return ValkeyFailure(
            "TLSHandshakeFailed",
            f"TLS handshake with Valkey at {endpoint} failed: {detail} (check spec.valkey.tls and its Secrets)",
        )
    return ValkeyFailure("ValkeyUnavailable", f"cannot reach Valkey at {endpoint}: {detail}")


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def redact(message: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


# ── one client per resource ─────────────────────────────────────────────────────


@dataclass
class _Entry:
    fingerprint: str
    valkey: ValkeySpec
    client: Any
    cert_dir: str | None


class ClientCache:
    """Clients by resource uid; a changed spec or credential closes the old client and builds a new one."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, uid: str, options: ConnectionOptions) -> Any:
        async with self._lock:
            entry = self._entries.get(uid)
            if entry is not None and entry.fingerprint == options.fingerprint:
                return entry.client
            if entry is not None:
                del self._entries[uid]
                await _close(entry)
            cert_dir: str | None = None
            cert_paths: tuple[str, str] | None = None
            if options.cert_pem is not None and options.key_pem is not None:
                cert_dir = tempfile.mkdtemp(prefix="agent-cache-tls-")
                cert_paths = (
                    _private_file(cert_dir, "tls.crt", options.cert_pem),
                    _private_file(cert_dir, "tls.key", options.key_pem),
                )
            try:
                client = build_client(options, cert_paths)
            except BaseException:
                if cert_dir is not None:
                    shutil.rmtree(cert_dir, ignore_errors=True)
                raise
            self._entries[uid] = _Entry(options.fingerprint, options.valkey, client, cert_dir)
            return client

    async def remembered(self, uid: str, valkey: ValkeySpec) -> Any | None:
        """The client last built for this resource, if it was for this same Valkey: what a deletion can still use
        to clean up after the Secrets it was built from are gone (a namespace being deleted removes them too)."""
        async with self._lock:
            entry = self._entries.get(uid)
        return entry.client if entry is not None and entry.valkey == valkey else None

    async def discard(self, uid: str) -> None:
        async with self._lock:
            entry = self._entries.pop(uid, None)
        if entry is not None:
            await _close(entry)

    async def close(self) -> None:
        async with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            await _close(entry)


def _private_file(directory: str, name: str, content: bytes) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    return path


async def _close(entry: _Entry) -> None:
    with contextlib.suppress(Exception):  # a client of an unreachable server may fail to close cleanly
        await entry.client.aclose()
    if entry.cert_dir is not None:
        shutil.rmtree(entry.cert_dir, ignore_errors=True)


# ── library views over one prefix ───────────────────────────────────────────────


async def read_config_or_none(client: Any, prefix: str) -> Any:
    """The config of ``prefix`` in Valkey; None when absent or malformed."""
    try:
        return await read_config(client, prefix)
    except ConfigurationError:
        return None


@contextlib.asynccontextmanager
async def cache_view(client: Any, prefix: str) -> AsyncIterator[AgentCache]:
    """A library cache over the prefix that only reads stats or flushes: no discovery, no live config, its own
    metrics registry (the operator's registry is not the agents')."""
    cache = AgentCache(
        AgentCacheOptions(
            client=client,
            name=prefix,
            discovery=DiscoveryOptions(enabled=False),
            config_refresh=ConfigRefreshOptions(enabled=False),
            telemetry=TelemetryOptions(registry=CollectorRegistry()),
        )
    )
    try:
        yield cache
    finally:
        await cache.close()
