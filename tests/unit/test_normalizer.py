"""Binary normalizer: stable refs for the same content, loud errors for bad input, bounded fetches."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from typing import cast

import pytest
from aiohttp import web

from agent_cache._errors import AgentCacheUsageError, ConfigurationError
from agent_cache.normalizer import (
    BinaryRef,
    compose_normalizer,
    default_normalizer,
    fetch_and_hash,
    hash_base64,
    hash_bytes,
    hash_url,
    make_fetch_and_hash,
    passthrough,
    public_address,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
PNG_B64 = base64.b64encode(PNG).decode()


def only_this_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The loopback test server's address, and no other (the default policy refuses loopback)."""
    return address == ipaddress.ip_address("127.0.0.1")


def image(source: Mapping[str, object]) -> BinaryRef:
    return cast(BinaryRef, {"kind": "image", "source": source})


# ─── hash_base64 / hash_bytes ─────────────────────────────────────────────────


def test_raw_base64_and_data_url_of_same_bytes_give_same_ref() -> None:
    ref = hash_base64(PNG_B64)
    assert ref == hash_base64(f"data:image/png;base64,{PNG_B64}")
    assert ref == hash_bytes(PNG)
    assert ref.startswith("sha256:") and len(ref) == len("sha256:") + 64


@pytest.mark.parametrize(
    "spelling",
    [
        "QUI",  # missing padding
        "QUI=",
        " QU\nI= \n",  # whitespace and line breaks (MIME-wrapped base64)
        "DATA:text/plain;BASE64,QUI",
    ],
)
def test_tolerated_base64_spellings(spelling: str) -> None:
    assert hash_base64(spelling) == hash_bytes(b"AB")


def test_url_safe_alphabet_decodes_to_same_bytes() -> None:
    raw = bytes([0xFB, 0xFF, 0xBF]) * 5
    assert hash_base64(base64.urlsafe_b64encode(raw).decode()) == hash_bytes(raw)
    assert hash_base64(base64.b64encode(raw).decode()) == hash_bytes(raw)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   \n",
        "not base64!",
        "Q",  # one leftover character cannot encode a byte
        "QUI==",  # more padding than needed
        "QQ==QQ==",  # padding in the middle
        "ab-_+/==",  # mixed alphabets
        "QUJD\u00e9",
        "data:text/plain,hello",  # data URL that is not base64
        "data:image/png;base64,",
    ],
)
def test_invalid_base64_is_rejected_not_hashed(garbage: str) -> None:
    with pytest.raises(AgentCacheUsageError, match="not valid base64"):
        hash_base64(garbage)


def test_distinct_bytes_give_distinct_refs() -> None:
    assert hash_base64("QQ==") != hash_base64("Qg==")


# ─── hash_url ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("HTTPS://CDN.Example.com/img.png", "https://cdn.example.com/img.png"),
        ("https://cdn.example.com:443/img.png", "https://cdn.example.com/img.png"),
        ("http://cdn.example.com:80/img.png", "http://cdn.example.com/img.png"),
        ("https://cdn.example.com/img.png?w=10&h=20", "https://cdn.example.com/img.png?h=20&w=10"),
        ("https://cdn.example.com/img.png#top", "https://cdn.example.com/img.png"),
        ("https://cdn.example.com", "https://cdn.example.com/"),
        ("https://cdn.example.com/a%2fb.png", "https://cdn.example.com/a%2Fb.png"),
        ("https://cdn.example.com/?q=a+b", "https://cdn.example.com/?q=a%20b"),
    ],
)
def test_equivalent_urls_share_a_ref(left: str, right: str) -> None:
    assert hash_url(left) == hash_url(right)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("https://cdn.example.com/Img.png", "https://cdn.example.com/img.png"),  # paths are case-sensitive
        ("https://cdn.example.com:8443/img.png", "https://cdn.example.com/img.png"),
        ("http://cdn.example.com/img.png", "https://cdn.example.com/img.png"),
        ("https://cdn.example.com/img.png?w=10", "https://cdn.example.com/img.png?w=11"),
        ("https://cdn.example.com/?a=1&a=2", "https://cdn.example.com/?a=2&a=1"),  # repeat order kept
    ],
)
def test_different_urls_keep_different_refs(left: str, right: str) -> None:
    assert hash_url(left) != hash_url(right)


def test_hash_url_shape() -> None:
    assert hash_url("HTTPS://Ex.com:443/p?b=2&a=1#f") == "url:https://ex.com/p?a=1&b=2"
    assert hash_url("http://[::1]:8080/x") == "url:http://[::1]:8080/x"


def test_hash_url_rejects_invalid_port() -> None:
    with pytest.raises(AgentCacheUsageError, match="invalid port"):
        hash_url("https://ex.com:99999/x")


# ─── passthrough / default_normalizer ─────────────────────────────────────────


def test_passthrough_keeps_the_source_verbatim() -> None:
    assert passthrough(image({"type": "base64", "data": "QQ"})) == "base64:QQ"
    assert passthrough(image({"type": "url", "url": "HTTPS://Ex.com/a"})) == "url:HTTPS://Ex.com/a"
    ref = image({"type": "file_id", "file_id": "file-1", "provider": "openai"})
    assert passthrough(ref) == "file_id:openai:file-1"
    assert passthrough(image({"type": "bytes", "data": b"A"})) == hash_bytes(b"A")


async def test_default_normalizer_needs_no_network() -> None:
    assert await default_normalizer(image({"type": "base64", "data": PNG_B64})) == hash_bytes(PNG)
    assert await default_normalizer(image({"type": "bytes", "data": PNG})) == hash_bytes(PNG)
    url = "https://EX.com:443/a.png?b=1&a=2"
    assert await default_normalizer(image({"type": "url", "url": url})) == "url:https://ex.com/a.png?a=2&b=1"
    ref = image({"type": "file_id", "file_id": "file-1", "provider": "anthropic"})
    assert await default_normalizer(ref) == "file_id:anthropic:file-1"


async def test_default_normalizer_treats_base64_data_url_as_content() -> None:
    data_url = f"data:image/png;base64,{PNG_B64}"
    assert await default_normalizer(image({"type": "url", "url": data_url})) == hash_bytes(PNG)


async def test_file_id_providers_cannot_collide() -> None:
    one = await default_normalizer(image({"type": "file_id", "file_id": "c", "provider": "a:b"}))
    other = await default_normalizer(image({"type": "file_id", "file_id": "b:c", "provider": "a"}))
    assert one != other


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        ({"kind": "video", "source": {"type": "url", "url": "https://x"}}, "kind"),
        ({"kind": "image"}, "source"),
        ({"kind": "image", "source": {"type": "blob"}}, "source.type"),
        ({"kind": "image", "source": {"type": "base64"}}, "source.data"),
        ({"kind": "image", "source": {"type": "bytes", "data": "QQ"}}, "source.data"),
        ({"kind": "image", "source": {"type": "file_id", "file_id": "f"}}, "source.provider"),
    ],
)
async def test_malformed_ref_names_the_offending_path(ref: BinaryRef, path: str) -> None:
    with pytest.raises(AgentCacheUsageError, match=rf"binary ref: {path}\b"):
        await default_normalizer(ref)


# ─── compose_normalizer ───────────────────────────────────────────────────────


async def test_by_kind_beats_source_handler_which_beats_default() -> None:
    async def audio_handler(ref: BinaryRef) -> str:
        return "kind:audio"

    normalize = compose_normalizer({"url": lambda url: f"custom:{url}", "by_kind": {"audio": audio_handler}})
    url_source = {"type": "url", "url": "https://ex.com/a"}
    assert await normalize({"kind": "audio", "source": url_source}) == "kind:audio"  # type: ignore[typeddict-item]
    assert await normalize(image(url_source)) == "custom:https://ex.com/a"
    # No base64 handler configured: the default, not passthrough, applies.
    assert await normalize(image({"type": "base64", "data": "QQ"})) == hash_bytes(b"A")


async def test_sync_and_async_handlers_both_work() -> None:
    async def async_bytes(data: bytes) -> str:
        await asyncio.sleep(0)
        return f"async:{len(data)}"

    normalize = compose_normalizer(
        {
            "bytes": async_bytes,
            "file_id": lambda file_id, provider: f"sync:{provider}/{file_id}",
            "by_kind": {"document": passthrough},
        }
    )
    assert await normalize(image({"type": "bytes", "data": b"abc"})) == "async:3"
    ref = image({"type": "file_id", "file_id": "f1", "provider": "openai"})
    assert await normalize(ref) == "sync:openai/f1"
    doc: BinaryRef = {"kind": "document", "source": {"type": "base64", "data": "QQ"}}
    assert await normalize(doc) == "base64:QQ"


async def test_handler_returning_a_non_string_is_a_usage_error() -> None:
    normalize = compose_normalizer({"url": lambda url: None})  # type: ignore[arg-type]
    with pytest.raises(AgentCacheUsageError, match="url returned NoneType"):
        await normalize(image({"type": "url", "url": "https://ex.com"}))


# ─── fetch_and_hash against a real loopback server ────────────────────────────

BIG = b"x" * 10_000


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 with an ephemeral port; yields its base URL."""
    release = asyncio.Event()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG)

    async def big_streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked, no Content-Length to check up front
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(10):
                await response.write(b"y" * 1_000)
        return response

    async def slow(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=5)
        return web.Response(body=b"late")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    app = web.Application()
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/ok.png", ok)
    app.router.add_get("/big", big)
    app.router.add_get("/big-streamed", big_streamed)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        release.set()
        await runner.cleanup()


async def test_fetch_hashes_the_served_bytes(server: str) -> None:
    assert await fetch_and_hash(f"{server}/ok.png?token=1", allow_address=only_this_host) == hash_bytes(PNG)


async def test_fetch_factory_works_as_a_url_handler(server: str) -> None:
    normalize = compose_normalizer(
        {"url": make_fetch_and_hash(timeout=2.0, max_bytes=len(PNG), allow_address=only_this_host)}
    )
    assert await normalize(image({"type": "url", "url": f"{server}/ok.png"})) == hash_bytes(PNG)


@pytest.mark.parametrize("path", ["/big", "/big-streamed"])
async def test_fetch_aborts_above_max_bytes(server: str, path: str) -> None:
    with pytest.raises(AgentCacheUsageError, match="exceeds max_bytes=1000"):
        await fetch_and_hash(f"{server}{path}", max_bytes=1000, allow_address=only_this_host)


async def test_fetch_reports_http_errors_without_the_query(server: str) -> None:
    with pytest.raises(AgentCacheUsageError, match="HTTP status 404") as caught:
        await fetch_and_hash(f"{server}/missing?X-Amz-Signature=secret", allow_address=only_this_host)
    assert "secret" not in str(caught.value)


@pytest.mark.timeout(5)
async def test_fetch_times_out_quickly(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(AgentCacheUsageError, match=r"timed out after 0\.2 s"):
        await fetch_and_hash(f"{server}/slow", timeout=0.2, allow_address=only_this_host)
    assert time.monotonic() - started < 1.0


async def test_fetch_reports_refused_connections() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(AgentCacheUsageError, match="failed: Client"):
            await fetch_and_hash(f"http://127.0.0.1:{port}/", timeout=2.0, allow_address=only_this_host)


async def test_fetch_hashes_data_urls_locally() -> None:
    assert await fetch_and_hash(f"data:image/png;base64,{PNG_B64}") == hash_bytes(PNG)


async def test_fetch_rejects_non_http_schemes() -> None:
    with pytest.raises(AgentCacheUsageError, match="only fetches http"):
        await fetch_and_hash("file:///etc/passwd")


@pytest.mark.parametrize(("timeout", "max_bytes"), [(0, 10), (1.0, 0), (1.0, -5)])
def test_fetch_limits_are_validated_when_the_handler_is_made(timeout: float, max_bytes: int) -> None:
    with pytest.raises(ConfigurationError):
        make_fetch_and_hash(timeout=timeout, max_bytes=max_bytes)


async def test_fetch_without_aiohttp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # makes `import aiohttp` raise ImportError
    with pytest.raises(ConfigurationError, match=r'pip install "agent-cache\[fetch\]"'):
        await fetch_and_hash("https://example.com/a.png")


# ─── fetch_and_hash contacts public addresses only ────────────────────────────


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
    ],
)
def test_the_default_policy_refuses_every_non_public_address(address: str) -> None:
    assert not public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_the_default_policy_allows_public_addresses(address: str) -> None:
    assert public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "127.0.0.2"])
async def test_fetch_refuses_loopback_literals_by_default(server: str, host: str) -> None:
    port = server.rsplit(":", 1)[1]
    with pytest.raises(AgentCacheUsageError, match=r"refused to connect to .*not a public address"):
        await fetch_and_hash(f"http://{host}:{port}/ok.png", timeout=2.0)


async def test_fetch_refuses_a_name_that_resolves_to_loopback(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    with pytest.raises(AgentCacheUsageError, match=r"refused to connect to localhost \("):
        await fetch_and_hash(f"http://localhost:{port}/ok.png", timeout=2.0)


async def test_fetch_follows_redirects_to_allowed_addresses(server: str) -> None:
    assert await fetch_and_hash(f"{server}/redirect?to=/ok.png", allow_address=only_this_host) == hash_bytes(PNG)


async def test_fetch_checks_every_redirect_hop(server: str) -> None:
    """The first hop (127.0.0.1) is allowed; the loopback address it redirects to is not."""
    port = server.rsplit(":", 1)[1]
    with pytest.raises(AgentCacheUsageError, match=r"refused to connect to 127\.0\.0\.2"):
        await fetch_and_hash(
            f"{server}/redirect?to=http://127.0.0.2:{port}/ok.png", timeout=2.0, allow_address=only_this_host
        )


async def test_fetch_gives_up_after_a_few_redirects(server: str) -> None:
    with pytest.raises(AgentCacheUsageError, match="more than 5 redirects"):
        await fetch_and_hash(f"{server}/loop", allow_address=only_this_host)
