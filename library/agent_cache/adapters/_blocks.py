"""Pure pieces every provider adapter shares: request values to plain JSON, binary parts to refs, tool arguments.

Keys are conservative on purpose. A part or field an adapter does not recognise is kept in the key as plain JSON
instead of being dropped, so a provider feature we have never heard of can cost a hit but can never make two
different requests share an answer. Nothing here imports a provider SDK.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from agent_cache._keys import TRANSPORT_ONLY_PARAMS, answer_headers
from agent_cache.normalizer import BinaryNormalizer, BinarySource
from agent_cache.types import BinaryBlock

Kind = Literal["image", "audio", "document"]

GENERIC_MEDIA_TYPES: dict[Kind, str] = {
    "image": "image/*",
    "audio": "audio/*",
    "document": "application/octet-stream",
}

# Magic numbers of the formats providers accept inline, so raw base64 and a data URL of the same bytes agree.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
)


def is_omitted(value: object) -> bool:
    """True for the SDKs' "not given" sentinels (openai/anthropic ``NOT_GIVEN``/``omit``)."""
    return type(value).__name__ in ("NotGiven", "Omit")


def plain(value: Any) -> Any:
    """A JSON-ready copy of a request value: SDK models dumped (without their unset ``None`` fields), sentinels dropped.

    ``None`` inside a dict stays: ``{"discount": None}`` in tool arguments or a JSON schema's ``"default": None`` is
    sent as ``null`` and is not the same request as leaving it out. Callers drop ``None`` where the position says it
    means "absent" (top-level parameters, a part's optional fields: see :func:`extras`).
    """
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return plain(value.model_dump(mode="json", by_alias=True, exclude_none=True))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items() if not is_omitted(v)}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    return value


def describe(obj: Any) -> Any:
    """A dataclass (a tool, a handoff, an output schema) as the JSON its fields hold; callables and objects skipped.

    Frameworks keep functions, guardrails and clients on their tool objects: none of that reaches the model, and
    none of it can be hashed, so only fields with JSON values (or nested dataclasses of them) are described.
    """
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        return plain(obj)
    spec: dict[str, Any] = {"kind": type(obj).__name__}
    for field in dataclasses.fields(obj):
        if field.name.startswith("_"):
            continue
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            spec[field.name] = describe(value)
            continue
        if value is None:
            continue
        data = plain(value)
        if _json_shaped(data):  # a refused value inside (NaN, a lone surrogate) is the key's error, not skipped
            spec[field.name] = data
    return spec


def _json_shaped(value: Any) -> bool:
    """Is ``value`` built only of JSON types (whatever their contents)? Callables and objects are not."""
    if isinstance(value, Mapping):
        return all(_json_shaped(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_json_shaped(item) for item in value)
    return value is None or isinstance(value, str | int | float)


def materialize(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request with one-shot iterators turned into lists, so hashing them does not empty the real call."""
    return {k: list(v) if isinstance(v, Iterator) else v for k, v in request.items()}


def passthrough_params(request: Mapping[str, Any], handled: Iterable[str]) -> dict[str, Any]:
    """Every request parameter except the ones the adapter rewrites and the transport-only ones, kept by name."""
    skip = set(handled) | TRANSPORT_ONLY_PARAMS
    params = {
        name: plain(value)
        for name, value in request.items()
        if name not in skip and value is not None and not is_omitted(value)
    }
    if "extra_headers" in params:  # feature headers (anthropic-beta...) are in the key; credentials never
        params["extra_headers"] = answer_headers(params["extra_headers"])
        if params["extra_headers"] is None:
            del params["extra_headers"]
    return params


def extras(part: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """The fields of ``part`` an adapter does not interpret: they stay in the key verbatim.

    Empty values are dropped with ``None``: a message echoed back from an SDK object carries ``annotations=[]``
    where the same message written as a dict has no such field, and both are the same request.
    """
    skip = set(known)
    return {k: plain(v) for k, v in part.items() if k not in skip and not _empty(v)}


def _empty(value: object) -> bool:
    return value is None or is_omitted(value) or value == [] or value == {}


# ─── Binary parts ─────────────────────────────────────────────────────────────


def split_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 payload)`` of a ``data:<type>;base64,<payload>`` URL, else None."""
    header, sep, payload = url.strip().partition(",")
    if not sep or header[:5].lower() != "data:" or not header.lower().endswith(";base64"):
        return None
    media_type = header[5:].split(";", 1)[0].strip().lower()
    return media_type, payload


def sniff_media_type(b64: str) -> str | None:
    """The media type of well-known formats from the first bytes of a base64 payload (decodes 16 characters)."""
    head = "".join(b64[:64].split())[:16].replace("-", "+").replace("_", "/")
    try:
        first = base64.b64decode(head + "=" * (-len(head) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    for magic, media_type in _SIGNATURES:
        if first.startswith(magic):
            return media_type
    if first[:4] == b"RIFF" and first[8:12] == b"WEBP":
        return "image/webp"
    if first[:4] == b"RIFF" and first[8:12] == b"WAVE":
        return "audio/wav"
    return None


async def binary_block(
    kind: Kind,
    normalizer: BinaryNormalizer,
    *,
    base64_data: str | None = None,
    url: str | None = None,
    file_id: str | None = None,
    raw: bytes | None = None,
    provider: str = "",
    media_type: str | None = None,
    **fields: Any,
) -> BinaryBlock:
    """A binary part as a content block whose ``ref`` comes from the normalizer.

    Exactly one source is given. A base64 data URL is treated as its payload and its declared media type, so
    ``data:image/png;base64,X`` and raw ``X`` give the same block. Without a declared type, inline bytes are
    sniffed; otherwise the kind's generic type (``image/*``) is used. ``fields`` (``detail``, ``filename``...)
    are copied onto the block when not None.
    """
    source: BinarySource
    inline = url if url is not None else base64_data
    if inline is not None and (parts := split_data_url(inline)) is not None:
        declared, base64_data = parts
        media_type = media_type or declared or None
        url = None
    if base64_data is not None:
        media_type = media_type or sniff_media_type(base64_data)
        source = {"type": "base64", "data": base64_data}
    elif url is not None:
        source = {"type": "url", "url": url}
    elif file_id is not None:
        source = {"type": "file_id", "file_id": file_id, "provider": provider}
    elif raw is not None:
        media_type = media_type or sniff_media_type(base64.b64encode(raw[:12]).decode())
        source = {"type": "bytes", "data": raw}
    else:
        raise ValueError("binary_block needs one source")
    ref = await normalizer({"kind": kind, "source": source})
    media_type = media_type or GENERIC_MEDIA_TYPES[kind]
    block: BinaryBlock = {"type": "binary", "kind": kind, "mediaType": media_type, "ref": ref}
    for name, value in fields.items():
        if value is not None and not is_omitted(value):
            block[name] = plain(value)  # type: ignore[literal-required]  # detail, filename and provider extras
    return block


# ─── Tool call arguments ──────────────────────────────────────────────────────


def parse_arguments(arguments: Any) -> Any:
    """Tool-call arguments as JSON values; a string that is not JSON stays a string (still a distinct key)."""
    if not isinstance(arguments, str):
        return plain(arguments)
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def dump_arguments(args: Any) -> str:
    """The JSON text a provider sends for parsed arguments (a string that was not JSON is returned as-is)."""
    if isinstance(args, str):
        return args
    return json.dumps(args, ensure_ascii=False, separators=(",", ":"))


def verbatim_arguments(arguments: Any) -> str | None:
    """The provider's argument text when dumping its parsed JSON would not give it back byte for byte, else None.

    Blocks hold parsed arguments (so spacing never splits a key); response metadata keeps the text itself only when
    it differs from the compact dump, so a hit returns the arguments exactly as the provider sent them.
    """
    if isinstance(arguments, str) and dump_arguments(parse_arguments(arguments)) != arguments:
        return arguments
    return None


def text_of(blocks: Iterable[Mapping[str, Any]]) -> str | None:
    """The joined text blocks, or None when there are none."""
    texts = [str(b.get("text", "")) for b in blocks if b.get("type") == "text"]
    return "".join(texts) if texts else None
