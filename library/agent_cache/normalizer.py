"""Binary normalizers: turn images, audio and documents into short, stable strings for cache keys.

A multimodal prompt may carry the same picture as raw base64, as a ``data:`` URL, as a link or as a
provider file id. Hashing the request verbatim would key megabytes of base64 and miss whenever the
encoding changes, so the key builder first asks a normalizer to reduce each binary part to a ref
such as ``sha256:<hex>`` or ``url:<normalized>``.

The default normalizer never touches the network and costs no more than one SHA-256: a cache lookup
must not become slower than the call it saves, nor fail because a CDN is down. Callers who want
content identity for URLs opt in with :func:`fetch_and_hash` (extra ``fetch``), which is bounded in
time and size because the URL comes from untrusted prompts. Unlike a padding-tolerant decoder,
:func:`hash_base64` rejects invalid input: hashing garbage as if it were empty bytes would make
unrelated requests share one cache entry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, NotRequired, TypedDict
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

from agent_cache._address_guard import AddressPolicy, check_literal, guarded_resolver, public_address
from agent_cache._errors import AgentCacheUsageError, ConfigurationError

__all__ = [
    "DEFAULT_FETCH_MAX_BYTES",
    "DEFAULT_FETCH_TIMEOUT",
    "Base64Source",
    "BinaryKind",
    "BinaryNormalizer",
    "BinaryRef",
    "BinarySource",
    "BytesSource",
    "FileIdSource",
    "NormalizerConfig",
    "UrlSource",
    "compose_normalizer",
    "default_normalizer",
    "fetch_and_hash",
    "hash_base64",
    "hash_bytes",
    "hash_url",
    "make_fetch_and_hash",
    "passthrough",
    "public_address",
]

# ─── Types ────────────────────────────────────────────────────────────────────

BinaryKind = Literal["image", "audio", "document"]


class Base64Source(TypedDict):
    type: Literal["base64"]
    data: str
    media_type: NotRequired[str]


class UrlSource(TypedDict):
    type: Literal["url"]
    url: str


class FileIdSource(TypedDict):
    type: Literal["file_id"]
    file_id: str
    provider: str


class BytesSource(TypedDict):
    type: Literal["bytes"]
    data: bytes


BinarySource = Base64Source | UrlSource | FileIdSource | BytesSource


class BinaryRef(TypedDict):
    kind: BinaryKind
    source: BinarySource
    context: NotRequired[dict[str, Any]]


BinaryNormalizer = Callable[[BinaryRef], Awaitable[str]]
"""What the cache calls: an async function from a binary part to its stable ref."""


class NormalizerConfig(TypedDict, total=False):
    """Handlers for :func:`compose_normalizer`; each may be sync or async."""

    base64: Callable[[str], str | Awaitable[str]]
    url: Callable[[str], str | Awaitable[str]]
    file_id: Callable[[str, str], str | Awaitable[str]]  # (file_id, provider)
    bytes: Callable[[bytes], str | Awaitable[str]]
    by_kind: Mapping[BinaryKind, Callable[[BinaryRef], str | Awaitable[str]]]


# ─── Hashing helpers ──────────────────────────────────────────────────────────

_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def hash_bytes(data: bytes) -> str:
    """Return ``sha256:<hex>`` of the raw bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _invalid_base64(reason: str) -> AgentCacheUsageError:
    # Never echo the payload: it can be megabytes long and is user content.
    return AgentCacheUsageError(f"data is not valid base64: {reason}")


def _decode_base64_strictly(payload: str) -> bytes:
    """Decode standard or URL-safe base64, tolerating only whitespace and missing padding."""
    compact = "".join(payload.split())
    if not compact:
        raise _invalid_base64("the payload is empty")
    if not compact.isascii():
        raise _invalid_base64("it contains non-ASCII characters")
    body = compact.rstrip("=")
    given_padding = len(compact) - len(body)
    if "-" in body or "_" in body:
        if "+" in body or "/" in body:
            raise _invalid_base64("it mixes the standard and URL-safe alphabets")
        body = body.translate(_URLSAFE_TO_STANDARD)
    if len(body) % 4 == 1:
        raise _invalid_base64(f"{len(body)} base64 characters cannot encode whole bytes")
    needed_padding = -len(body) % 4
    if given_padding > needed_padding:
        raise _invalid_base64("it has too much '=' padding")
    try:
        return base64.b64decode(body + "=" * needed_padding, validate=True)
    except binascii.Error as exc:
        raise _invalid_base64(f"{exc} (characters outside the alphabet or misplaced '=')") from exc


def _is_data_url(value: str) -> bool:
    return value.lstrip()[:5].lower() == "data:"


def _is_base64_data_url(value: str) -> bool:
    header, sep, _ = value.partition(",")
    return _is_data_url(value) and bool(sep) and header.rstrip().lower().endswith(";base64")


def hash_base64(data: str) -> str:
    """Return ``sha256:<hex>`` of the bytes that ``data`` encodes.

    ``data`` is raw base64 (standard or URL-safe, padding optional, line breaks allowed) or a
    ``data:<mime>;base64,<payload>`` URL; both spellings of the same bytes give the same ref.
    Raises :class:`AgentCacheUsageError` when ``data`` is not valid base64.
    """
    if not isinstance(data, str):
        raise AgentCacheUsageError(f"base64 data must be a str, got {type(data).__name__}")
    payload = data
    if _is_data_url(data):
        if not _is_base64_data_url(data):
            raise _invalid_base64("a data URL must look like data:<mime>;base64,<payload>")
        payload = data.partition(",")[2]
    return hash_bytes(_decode_base64_strictly(payload))


# ─── URLs ─────────────────────────────────────────────────────────────────────

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_PERCENT_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


def _describe_url(url: str) -> str:
    """The URL without credentials, query or fragment: presigned URLs carry secrets there."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _normalize_url(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    if netloc:
        try:
            port = parts.port
        except ValueError as exc:
            raise AgentCacheUsageError(f"URL has an invalid port: {_describe_url(url)}") from exc
        host = parts.hostname or ""  # already lowercased by urllib
        if ":" in host:
            host = f"[{host}]"  # IPv6 literal
        if port is not None and port != _DEFAULT_PORTS.get(scheme):
            host = f"{host}:{port}"
        userinfo, at, _ = netloc.rpartition("@")
        netloc = f"{userinfo}{at}{host}"
    path = _PERCENT_ESCAPE.sub(lambda match: match.group().upper(), parts.path)
    if not path and netloc and scheme in ("http", "https"):
        path = "/"
    # Sort by name only: the relative order of repeated names (a=1&a=2) can matter to servers.
    pairs = sorted(parse_qsl(parts.query, keep_blank_values=True), key=lambda pair: pair[0])
    return urlunsplit((scheme, netloc, path, urlencode(pairs), ""))


def hash_url(url_str: str) -> str:
    """Return ``url:<normalized>`` without fetching anything.

    Normalization lowercases scheme and host, drops the default port and the fragment, sorts query
    parameters by name and canonicalizes escapes, so spellings of one address share a key. Two
    different URLs serving the same bytes still get different refs; use :func:`fetch_and_hash` if
    that matters more than latency.
    """
    if not isinstance(url_str, str):  # the parameter keeps the reference's name for keyword callers
        raise AgentCacheUsageError(f"url must be a str, got {type(url_str).__name__}")
    return "url:" + _normalize_url(url_str)


# ─── Fetching (extra "fetch") ─────────────────────────────────────────────────

DEFAULT_FETCH_TIMEOUT = 10.0
DEFAULT_FETCH_MAX_BYTES = 20 * 1024 * 1024
_FETCH_CHUNK_BYTES = 64 * 1024
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _check_fetch_limits(timeout: float, max_bytes: int) -> None:
    if not timeout > 0:
        raise ConfigurationError(f"fetch timeout must be > 0 seconds, got {timeout!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ConfigurationError(f"fetch max_bytes must be a positive int, got {max_bytes!r}")


def _too_large(shown: str, max_bytes: int) -> AgentCacheUsageError:
    return AgentCacheUsageError(f"fetching {shown} aborted: the body exceeds max_bytes={max_bytes}")


async def fetch_and_hash(
    url: str,
    *,
    timeout: float = DEFAULT_FETCH_TIMEOUT,  # noqa: ASYNC109 - the handler owns its bound, callers rarely wrap
    max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
    allow_address: AddressPolicy = public_address,
) -> str:
    """Download ``url`` and return ``sha256:<hex>`` of its body (content identity for URLs).

    The body is streamed and hashed chunk by chunk; the download is aborted with
    :class:`AgentCacheUsageError` once it exceeds ``max_bytes``, takes longer than ``timeout``
    seconds in total, or answers with a non-2xx status. Base64 ``data:`` URLs are hashed locally.
    Only public addresses are contacted, for the URL and every redirect (at most
    ``_MAX_REDIRECTS``): loopback, private, link-local and other non-global addresses are refused,
    whether written as IP literals or reached through DNS. ``allow_address`` replaces that rule
    (a predicate on ``ipaddress`` objects), e.g. for an internal CDN.
    Needs aiohttp (``pip install "agent-cache[fetch]"``).
    """
    _check_fetch_limits(timeout, max_bytes)
    if _is_base64_data_url(url):
        return hash_base64(url)
    shown = _describe_url(url)
    try:
        import aiohttp
    except ImportError as exc:
        raise ConfigurationError('fetch_and_hash needs aiohttp: pip install "agent-cache[fetch]"') from exc

    digest = hashlib.sha256()
    received = 0
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(resolver=guarded_resolver(allow_address)),
        ) as session:
            for _ in range(_MAX_REDIRECTS + 1):
                parts = urlsplit(url)
                if parts.scheme.lower() not in ("http", "https"):
                    raise AgentCacheUsageError(f"fetch_and_hash only fetches http(s) URLs, got {_describe_url(url)!r}")
                check_literal(parts.hostname or "", allow_address)
                async with session.get(url, allow_redirects=False) as response:
                    location = response.headers.get("Location")
                    if response.status in _REDIRECTS and location:
                        url = urljoin(str(response.url), location)
                        continue
                    if not 200 <= response.status < 300:
                        raise AgentCacheUsageError(f"fetching {shown} failed with HTTP status {response.status}")
                    # Content-Length counts encoded bytes; only trust it when no decoding happens.
                    declared = response.content_length
                    if declared is not None and declared > max_bytes and "Content-Encoding" not in response.headers:
                        raise _too_large(shown, max_bytes)
                    async for chunk in response.content.iter_chunked(_FETCH_CHUNK_BYTES):
                        received += len(chunk)
                        if received > max_bytes:
                            raise _too_large(shown, max_bytes)
                        digest.update(chunk)
                    return "sha256:" + digest.hexdigest()
    except TimeoutError as exc:
        raise AgentCacheUsageError(f"fetching {shown} timed out after {timeout:g} s") from exc
    except aiohttp.ClientError as exc:
        raise AgentCacheUsageError(f"fetching {shown} failed: {type(exc).__name__}") from exc
    raise AgentCacheUsageError(f"fetching {shown} failed: more than {_MAX_REDIRECTS} redirects")


def make_fetch_and_hash(
    *,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
    allow_address: AddressPolicy = public_address,
) -> Callable[[str], Awaitable[str]]:
    """Return a ``url`` handler like :func:`fetch_and_hash` with other limits (checked now)."""
    _check_fetch_limits(timeout, max_bytes)

    async def fetch_and_hash_with_limits(url: str) -> str:
        return await fetch_and_hash(url, timeout=timeout, max_bytes=max_bytes, allow_address=allow_address)

    return fetch_and_hash_with_limits


# ─── Normalizers ──────────────────────────────────────────────────────────────

_KINDS = ("image", "audio", "document")
_SOURCE_FIELDS: dict[object, tuple[tuple[str, type], ...]] = {
    "base64": (("data", str),),
    "url": (("url", str),),
    "file_id": (("file_id", str), ("provider", str)),
    "bytes": (("data", bytes),),
}


def _check_ref(ref: Mapping[str, object]) -> None:
    """Reject malformed refs with the offending path, before any handler runs."""
    if ref.get("kind") not in _KINDS:
        raise AgentCacheUsageError(f"binary ref: kind must be one of {_KINDS}, got {ref.get('kind')!r}")
    source = ref.get("source")
    if not isinstance(source, Mapping):
        raise AgentCacheUsageError(f"binary ref: source must be a mapping, got {type(source).__name__}")
    fields = _SOURCE_FIELDS.get(source.get("type"))
    if fields is None:
        raise AgentCacheUsageError(
            f"binary ref: source.type must be one of {tuple(_SOURCE_FIELDS)}, got {source.get('type')!r}"
        )
    for name, expected in fields:
        value = source.get(name)
        if not isinstance(value, expected):
            raise AgentCacheUsageError(
                f"binary ref: source.{name} must be {expected.__name__}, got {type(value).__name__}"
            )


def _file_id_ref(file_id: str, provider: str) -> str:
    # Escape ':' in the provider so ("a:b", "c") and ("a", "b:c") cannot collide.
    return f"file_id:{quote(provider, safe='')}:{file_id}"


def passthrough(ref: BinaryRef) -> str:
    """Return the source as-is behind a scheme prefix (bytes are hashed: they are not a string).

    Useful as a ``by_kind`` handler when exact spelling, not content, should decide cache hits.
    """
    _check_ref(ref)
    source = ref["source"]
    if source["type"] == "base64":
        return "base64:" + source["data"]
    if source["type"] == "url":
        return "url:" + source["url"]
    if source["type"] == "file_id":
        return _file_id_ref(source["file_id"], source["provider"])
    return hash_bytes(source["data"])


def _default_url(url: str) -> str:
    # A base64 data URL carries the content itself: give it the same ref as the raw base64.
    return hash_base64(url) if _is_base64_data_url(url) else hash_url(url)


async def _settle(result: str | Awaitable[str], handler_name: str) -> str:
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, str):
        raise AgentCacheUsageError(f"normalizer handler {handler_name} returned {type(result).__name__}, expected str")
    return result


def compose_normalizer(cfg: NormalizerConfig | None = None) -> BinaryNormalizer:
    """Build a normalizer: ``by_kind[kind]`` first, then the source-type handler, then the default.

    Defaults: base64 → :func:`hash_base64`, url → :func:`hash_url` (base64 data URLs →
    :func:`hash_base64`), file_id → ``file_id:<provider>:<id>``, bytes → :func:`hash_bytes`.
    The config is read once, so mutating it afterwards has no effect. (``cfg``: the reference's name.)
    """
    cfg = cfg or {}
    by_kind = dict(cfg.get("by_kind") or {})
    on_base64 = cfg.get("base64") or hash_base64
    on_url = cfg.get("url") or _default_url
    on_file_id = cfg.get("file_id") or _file_id_ref
    on_bytes = cfg.get("bytes") or hash_bytes

    async def normalize(ref: BinaryRef) -> str:
        _check_ref(ref)
        kind_handler = by_kind.get(ref["kind"])
        if kind_handler is not None:
            return await _settle(kind_handler(ref), f"by_kind[{ref['kind']!r}]")
        source = ref["source"]
        if source["type"] == "base64":
            return await _settle(on_base64(source["data"]), "base64")
        if source["type"] == "url":
            return await _settle(on_url(source["url"]), "url")
        if source["type"] == "file_id":
            return await _settle(on_file_id(source["file_id"], source["provider"]), "file_id")
        return await _settle(on_bytes(source["data"]), "bytes")

    return normalize


default_normalizer: BinaryNormalizer = compose_normalizer()
"""Zero-latency, no-network normalizer used when the cache is given none."""
