"""``agent-cache export`` / ``import``: entries, TTLs, tenants and indexes survive a round trip on a standalone server
and a cluster; existing entries are kept unless --overwrite; a bad file is refused with its line number."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from valkey.asyncio import Valkey

from agent_cache import LlmStoreOptions, ReliabilityOptions, ToolStoreOptions
from agent_cache._backend import Backend
from agent_cache._keys import KeyLayout
from agent_cache._transfer import Reader
from agent_cache.commands.export import export as export_cache
from agent_cache.commands.import_ import Importer
from agent_cache.tiers.llm import index_command
from tests.cli.conftest import NAME, Populated, make_cache, populate
from tests.cli.running import agent_cache, run_in_pty, strip_ansi
from tests.cli.test_cli_bad_input import run_into_a_closed_pipe
from tests.servers import cluster_client, flush_all_primaries

COPY = "support_bot_copy"
LONG_ANSWER = "Valkey is an open source in-memory data store. " * 60  # stored compressed (over 1 KB)
QUESTION = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is Valkey, at length?"}]}
TENANT_QUESTION = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Our plan?"}]}


@dataclass(frozen=True)
class Server:
    client: Any
    args: tuple[str, ...]
    """--url (and --cluster) for the commands."""


@pytest.fixture(
    params=[
        pytest.param("standalone", marks=pytest.mark.valkey),
        pytest.param("cluster", marks=[pytest.mark.valkey, pytest.mark.cluster]),
    ]
)
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """An empty server of each kind with cache ``support_bot`` populated as ``tests.cli.conftest`` says, plus a
    compressed answer, a tenant's answer and tool result, and an entry LangChain's adapter index lists."""
    client: Any
    if request.param == "cluster":
        nodes = request.getfixturevalue("valkey_cluster").startup_nodes
        client = cluster_client(nodes, decode_responses=False)
        args: tuple[str, ...] = ("--url", f"valkey://{nodes[0][0]}:{nodes[0][1]}", "--cluster")
    else:
        url = request.getfixturevalue("valkey_url")
        from valkey.asyncio import Valkey

        client = Valkey.from_url(url, decode_responses=False)
        args = ("--url", url)
    await flush_all_primaries(client)
    async with make_cache(client) as cache:
        await populate(cache)
        key = await cache.llm.store(QUESTION, LONG_ANSWER, LlmStoreOptions(tokens={"input": 10, "output": 900}))
        await cache.backend.write([index_command(cache.keys.adapter_index("langchain"), key, 3600)])
        with cache.tenant("acme"):
            await cache.llm.store(TENANT_QUESTION, "Enterprise.")
            await cache.tool.store("get_weather", {"city": "Sofia"}, '{"t": 21}', ToolStoreOptions(ttl=900))
    try:
        yield Server(client, args)
    finally:
        await client.aclose()


def export(server: Server, path: Path, *extra: str) -> dict[str, Any]:
    done = agent_cache("export", *server.args, "--name", NAME, *extra)
    assert done.returncode == 0, done.stderr
    path.write_text(done.stdout)
    return {"stderr": done.stderr, "lines": [json.loads(line) for line in done.stdout.splitlines()]}


def import_(server: Server, path: Path | str, *extra: str, code: int = 0) -> dict[str, Any]:
    done = agent_cache("import", *server.args, "-f", str(path), "--json", *extra)
    assert done.returncode == code, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def all_keys(client: Any, pattern: str) -> set[bytes]:
    return {key async for key in client.scan_iter(match=pattern, count=1000)}


async def test_a_round_trip_into_another_name_keeps_entries_ttls_tenants_and_indexes(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "support_bot.jsonl"
    exported = export(server, path)
    header, *records, listing, trailer = exported["lines"]
    assert header["format"] == "agent-cache-export" and header["version"] == 1 and header["cache"] == NAME
    assert trailer == {"end": True, "entries": len(records), "listings": 1}
    assert sorted(r["tier"] for r in records).count("llm") == 5 + 2 and len(records) == 7 + 10 + 1
    assert "exported 18 entries of cache support_bot (llm: 7, tool: 11)" in exported["stderr"]
    assert listing == {"tier": "llm", "adapter": "langchain", "hash": KeyLayout(NAME).llm(listing["hash"])[-64:]}

    report = import_(server, path, "--name", COPY)
    assert (report["imported"], report["kept_existing"], report["by_tier"]) == (18, 0, {"llm": 7, "tool": 11})
    assert report["adapter_listings"] == 1
    source, copy = KeyLayout(NAME), KeyLayout(COPY)
    for record in records:  # the very bytes, under the new name, with at most the TTL they had
        if record["tier"] == "llm":
            before, after = source.llm(record["hash"]), copy.llm(record["hash"])
        else:
            before, after = (layout.tool_prefix(record["tool"]) + record["hash"] for layout in (source, copy))
        assert await server.client.get(after) == await server.client.get(before) == base64.b64decode(record["value"])
        assert 0 < await server.client.pttl(after) <= record["ttl_ms"] + 1000

    async with make_cache(server.client, COPY) as cache:
        hit = await cache.llm.check(QUESTION)
        assert hit.hit and hit.response == LONG_ANSWER and hit.output_tokens == 900
        assert not (await cache.llm.check(TENANT_QUESTION)).hit  # the tenant's answer stays the tenant's
        with cache.tenant("acme"):
            assert (await cache.llm.check(TENANT_QUESTION)).response == "Enterprise."
            assert (await cache.tool.check("get_weather", {"city": "Sofia"})).hit
        assert await server.client.zrange(copy.adapter_index("langchain"), 0, -1) == [
            copy.llm(listing["hash"]).encode()
        ]
        # The indexes were rebuilt: invalidation finds every imported entry, and only those.
        assert await cache.tool.invalidate_by_tool("get_weather") == 4
        assert await cache.llm.invalidate_by_model("claude-sonnet-4-5") == 2
        assert await cache.llm.clear() == 5
    assert await all_keys(server.client, f"{COPY}:llm:*") == set()
    assert len(await all_keys(server.client, f"{NAME}:llm:*")) == 7  # the source is untouched

    again = import_(server, path, "--name", NAME)  # into the cache it came from: everything is there already
    assert (again["imported"], again["kept_existing"]) == (0, 18)


async def test_existing_entries_are_kept_unless_overwrite(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    export(server, path, "--tier", "llm")
    async with make_cache(server.client, COPY) as cache:
        newer = await cache.llm.store(QUESTION, "a newer answer")
    before = await all_keys(server.client, "*")
    dry = import_(server, path, "--name", COPY, "--dry-run")
    assert (dry["dry_run"], dry["imported"], dry["kept_existing"]) == (True, 6, 1)
    assert await all_keys(server.client, "*") == before  # nothing written

    kept = import_(server, path, "--name", COPY)
    assert (kept["imported"], kept["kept_existing"]) == (6, 1)
    assert b"a newer answer" in await server.client.get(newer)
    replaced = import_(server, path, "--name", COPY, "--overwrite")
    assert (replaced["imported"], replaced["replaced"]) == (7, 7)
    assert b"a newer answer" not in await server.client.get(newer)


async def test_time_since_the_export_is_taken_off_the_ttls(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    lines = export(server, path, "--tier", "tool")["lines"]
    lines[0]["exported_at_ms"] -= 400_000  # tool TTLs are 300 s, and 600 s for get_weather: its 4 entries are left
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = import_(server, path, "--name", COPY)
    assert (report["imported"], report["expired"]) == (4, 7)
    assert 0 < await server.client.pttl(KeyLayout(COPY).tool_prefix("get_weather") + lines[1]["hash"]) <= 201_000


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:-1], ":20: the file ends without its end line: it was cut short after 18 entries"),
        (lambda lines: [*lines[:3], "{oops", *lines[3:]], ":4: not JSON (Expecting property name"),
        (lambda lines: ["[]", *lines[1:]], ":1: expected a JSON object, got list"),
        (lambda lines: [lines[0].replace('"version":1', '"version":9'), *lines[1:]], ":1: header: version 9 was"),
        (lambda lines: [lines[0], lines[1].replace('"hash":"', '"hash":"}'), *lines[2:]], ":2: hash must be 64"),
        (lambda lines: [lines[0], lines[1].replace('"value":"', '"value":"!'), *lines[2:]], ":2: value is not base64"),
        (lambda lines: [lines[0], lines[1].replace('"tier":"', '"tier":"x'), *lines[2:]], ":2: tier must be one of"),
        (lambda lines: [*lines, lines[1]], ":22: a line after the end line"),
        (lambda lines: [lines[0], *lines[2:]], "the end line counts 18 entries but 17 came before it"),
        (lambda lines: [lines[0].replace('"cache":"', '"cache":"a b'), *lines[1:]], ":1: header: cache name 'a b"),
        (lambda lines: [*lines[:2], "\udcff", *lines[2:]], ":3: not UTF-8 text"),
    ],
)
async def test_a_bad_file_is_refused_whole_with_its_line(
    server: Server, tmp_path: Path, edit: Any, message: str
) -> None:
    path = tmp_path / "e.jsonl"
    export(server, path)
    path.write_bytes(("\n".join(edit(_lines(path))) + "\n").encode(errors="surrogateescape"))
    done = agent_cache("import", *server.args, "-f", str(path), "--name", COPY)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {path}:") and message in done.stderr, done.stderr
    assert await all_keys(server.client, f"{COPY}:*") == set()  # nothing was written


async def test_stdin_stops_at_a_bad_line_and_says_what_was_written(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    export(server, path, "--tier", "tool")
    lines = _lines(path)
    done = agent_cache("import", *server.args, "-f", "-", "--name", COPY, stdin="\n".join([*lines[:4], "{"]) + "\n")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: stdin:5: not JSON") and "0 entries were written before it" in done.stderr
    assert await all_keys(server.client, f"{COPY}:*") == set()  # the batch before the bad line was not sent
    whole = agent_cache("import", *server.args, "-f", "-", "--name", COPY, "--json", stdin=path.read_text())
    assert json.loads(whole.stdout)["imported"] == 11


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--tier", "llm,bogus"], "--tier llm,bogus: unknown tier 'bogus'; choose from llm, tool"),
        (["export", "--tier", "session"], "session state is not exported"),
        (["export", "--tier", "llm,llm"], "a tier is named twice"),
        (["import", "-f", "/nonexistent/e.jsonl"], "-f /nonexistent/e.jsonl: No such file or directory"),
        (["import", "-f", "-"], "stdin: empty: no header line"),
        (["import", "-f", "-", "--tier", "x"], "--tier x: unknown tier 'x'"),
    ],
)
def test_usage_errors_are_one_line(valkey_url: str, args: list[str], message: str) -> None:
    done = agent_cache(*args, "--url", valkey_url, "--name", NAME, stdin="")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


async def test_progress_on_a_terminal_plain_on_a_pipe_and_a_closed_pipe(populated: Populated, tmp_path: Path) -> None:
    server = Server(None, ("--url", populated.url))
    path = tmp_path / "e.jsonl"
    exported = export(server, path)
    assert "exporting" not in exported["stderr"]  # no bar on a pipe
    code, output = run_in_pty("import", *server.args, "-f", str(path), "--name", COPY)
    assert code == 0 and "importing" in strip_ansi(output) and "imported 15 of 15 entries" in strip_ansi(output)
    code, output = run_in_pty("export", *server.args, "--name", NAME)
    assert code == 2 and "error: the export goes to stdout: redirect it to a file" in strip_ansi(output)
    done = run_into_a_closed_pipe("export", *server.args, "--name", NAME)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "error" not in done.stderr, done.stderr


def test_an_empty_cache_exports_a_valid_empty_file(valkey_url: str, tmp_path: Path) -> None:
    done = agent_cache("export", "--url", valkey_url, "--name", "nothing_here")
    assert done.returncode == 3 and "exported 0 entries" in done.stderr
    path = tmp_path / "empty.jsonl"
    path.write_text(done.stdout)
    again = agent_cache("import", "--url", valkey_url, "-f", str(path), "--json")
    assert again.returncode == 3 and json.loads(again.stdout)["name"] == "nothing_here"


async def test_many_entries_page_through_indexes_and_batches(
    valkey_client: Any, valkey_url: str, tmp_path: Path
) -> None:
    """More entries than a page (500): ZSCAN pages, import batches, and a bad line after two batches."""
    # Stores that raise (never skipped silently, as fail-open would on a slow machine), in groups: a group's
    # stores share one event loop, so the last one's wait includes everyone's work before it.
    async with make_cache(valkey_client, reliability=ReliabilityOptions(timeout_s=30, on_error="raise")) as cache:
        for group in range(0, 1201, 100):
            numbers = range(group, min(group + 100, 1201))
            await asyncio.gather(*(cache.tool.store("search", {"q": i}, f'{{"hits": {i}}}') for i in numbers))
            await asyncio.gather(*(cache.llm.store({"model": "m", "messages": [str(i)]}, "a") for i in numbers))
    server = Server(valkey_client, ("--url", valkey_url))
    path = tmp_path / "e.jsonl"
    lines = export(server, path)["lines"]
    assert len({(line["tier"], line["hash"]) for line in lines[1:-1]}) == len(lines) - 2 == 2402  # no repeats
    cut = "".join(f"{json.dumps(line)}\n" for line in lines[: 1 + 1100]) + "{\n"
    done = agent_cache("import", *server.args, "-f", "-", "--name", COPY, stdin=cut)
    assert done.returncode == 2 and "stdin:1102: not JSON" in done.stderr, done.stderr
    assert "1,000 entries were written before it" in done.stderr
    assert len(await all_keys(valkey_client, f"{COPY}:llm:*")) == 1000
    report = import_(server, path, "--name", COPY)
    assert (report["imported"], report["kept_existing"]) == (1402, 1000)
    async with make_cache(valkey_client, COPY) as copy:
        assert await copy.llm.invalidate_by_model("m") == 1201
        assert await copy.tool.invalidate_by_tool("search") == 1201


# ── hunting: awkward names, tenants and cache names that are prefixes of each other ───────────────────────────────

_CACHES = ("fl", "fl:x", "fl.x")
_NAMES = st.one_of(
    st.sampled_from(("x", "acme:x", "{t}", "*", "a%3Ax", "é", "%01")), st.text("ab:{}%*é\\ ", min_size=1, max_size=4)
)
_STORES = st.lists(
    st.tuples(
        st.sampled_from(_CACHES),
        st.sampled_from(("", "acme", "acme:x", "{t}")),
        st.sampled_from(("llm", "tool")),
        _NAMES,  # the model or the tool
        st.sampled_from(("hi", "acme:x")),
        st.sampled_from((None, 60, 3600)),
    ),
    max_size=12,
)


async def _transfer(client: Any, source: str, target: str) -> list[str]:
    """Export cache ``source`` and import the lines into ``target``, in process; returns the lines."""
    lines: list[str] = []
    await export_cache(Backend(client), KeyLayout(source), ("llm", "tool"), lines.append, lambda _: None)
    reader = Reader("e.jsonl")
    items = [item for line in lines if (item := reader.feed(line)) is not None]
    reader.finish()
    assert reader.header is not None
    options = argparse.Namespace(overwrite=False, dry_run=False)
    importer = Importer(Backend(client), KeyLayout(target), reader.header, options)
    await importer.write(items)
    return lines


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stores=_STORES)
def test_a_copy_answers_every_request_as_its_source_did(valkey_server: Any, stores: list[Any]) -> None:
    """Every (cache, tenant, request) stored answers the same from the copy and nothing else does; a cache's export
    holds none of the entries of a cache whose name it prefixes; the copy's indexes find every imported entry."""

    async def scenario() -> None:
        client = Valkey.from_url(valkey_server.url, decode_responses=False)
        await client.flushall()
        caches = {name: make_cache(client, name) for name in (*_CACHES, *(f"copy.{n}" for n in _CACHES))}
        try:
            stored: dict[tuple[str, str, str, str, str], str] = {}
            for number, (name, tenant, tier, what, prompt, ttl) in enumerate(stores):
                cache, answer = caches[name], f"answer {number}"
                with cache.tenant(tenant) if tenant else contextlib.nullcontext():
                    if tier == "llm":
                        await cache.llm.store({"model": what, "messages": [prompt]}, answer, LlmStoreOptions(ttl=ttl))
                    else:
                        await cache.tool.store(what, {"q": prompt}, answer, ToolStoreOptions(ttl=ttl))
                stored[(name, tenant, tier, what, prompt)] = answer
            for name in _CACHES:
                lines = await _transfer(client, name, f"copy.{name}")
                assert len(lines) - 2 == len([key for key in stored if key[0] == name])  # no other cache's entries
            for (name, tenant, tier, what, prompt), answer in stored.items():
                copy = caches[f"copy.{name}"]
                with copy.tenant(tenant) if tenant else contextlib.nullcontext():
                    if tier == "llm":
                        found = (await copy.llm.check({"model": what, "messages": [prompt]})).response
                    else:
                        found = (await copy.tool.check(what, {"q": prompt})).response
                assert found == answer, (name, tenant, tier, what, prompt)
            for name in _CACHES:
                copy, mine = caches[f"copy.{name}"], [key for key in stored if key[0] == name]
                for tier, what in {(key[2], key[3]) for key in mine}:
                    expected = len([key for key in mine if key[2:4] == (tier, what)])
                    invalidate = copy.llm.invalidate_by_model if tier == "llm" else copy.tool.invalidate_by_tool
                    assert await invalidate(what) == expected, (name, tier, what)
        finally:
            for cache in caches.values():
                await cache.close()
            await client.aclose()

    asyncio.run(scenario())
