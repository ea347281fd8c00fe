"""The three tiers against a model of their documented semantics, on a real Valkey (hypothesis stateful).

The model is the spec, in a few dicts: an LLM answer belongs to (cache, tenant, request), a tool result to
(cache, tenant, tool, args), a session field to (cache, tenant, thread, field). Tenants never see each other's
entries; ``invalidate_by_model``/``invalidate_by_tool`` reach every tenant of their cache; ``flush`` empties its
cache and nothing else; two instances of one cache (two processes) see the same data. Names are drawn from a
strategy that favours separators, braces, percent signs, unicode and names that are prefixes of each other, the
places where key layouts collide. A divergence is a bug in the library or in this model: fix whichever is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from prometheus_client import CollectorRegistry
from valkey.asyncio import Valkey

from agent_cache import AgentCache, AgentCacheOptions, LlmStoreOptions, TelemetryOptions, ToolPolicy, ToolStoreOptions
from agent_cache.embedded import EmbeddedCluster
from tests.servers import ServerHandle, cluster_client, flush_all_primaries

T = TypeVar("T")

# Cache names that are prefixes of each other across every separator a key layout might use.
CACHE_NAMES = ("fl", "fl:x", "fl:x:y", "fl.x", "fl-x")
# Tenants, threads, tools and fields are drawn from small pools of fragments that collide in naive layouts
# (the tenant/thread separator, hash-tag braces, escapes, globs), joined with ':' so that "acme" + "x" and
# "" + "acme:x" are both drawn; sometimes free text. Small pools make collisions likely within a few steps.
tenants = st.sampled_from(("", "acme", "acme:x", "{t}"))
FRAGMENTS = ("x", "acme", "a%3Ax", "{t}", "*", "é")
awkward_names = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.builds(lambda head, tail: f"{head}:{tail}", st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS)),
    st.text(alphabet="ab:{}%*é\\", min_size=1, max_size=4),
)
# Tools come from a smaller pool, so policies, stores and invalidations meet the same tool within a run.
tool_names = st.one_of(st.sampled_from(("x", "acme:x", "{t}", "*")), st.sampled_from(("x", "acme:x")), awkward_names)
models = st.sampled_from(("gpt-4o", "gpt-4o:mini", "claude{3}"))
prompts = st.sampled_from(("hi", "hello", "acme:x"))
values = st.text(min_size=0, max_size=8)

SESSION_TTL = 3600  # a tier TTL, so session reads take the sliding fast paths the model must still agree with
DEFAULT_TTL = 7200
TOOL_TIER_TTL = 900  # for every other cache name: the tier default sits between the default and the policies
ttls = st.sampled_from((None, 60, 120))


def _tier_defaults(name: str) -> dict[str, dict[str, int]]:
    tiers = {"session": {"ttl": SESSION_TTL}}
    if CACHE_NAMES.index(name) % 2:
        tiers["tool"] = {"ttl": TOOL_TIER_TTL}
    return tiers


class TierModel(RuleBasedStateMachine):
    """Two instances (``0``, ``1``: two processes) of each cache name, each with its own client."""

    client_factory: Any = None  # set by the test: () -> client of the server under test

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.registry = CollectorRegistry()
        self.clients: list[Any] = []
        self.caches: dict[tuple[str, int], AgentCache] = {}
        self.llm: dict[tuple[str, str, str, str], str] = {}
        self.tool: dict[tuple[str, str, str, str], str] = {}
        self.session: dict[tuple[str, str, str], dict[str, str]] = {}
        self.policies: dict[tuple[str, str], ToolPolicy] = {}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    @initialize()
    def open_caches(self) -> None:
        async def open_all() -> None:
            first = type(self).client_factory()
            await flush_all_primaries(first)
            self.clients.append(first)
            self.clients.append(type(self).client_factory())
            for name in CACHE_NAMES:
                for instance in (0, 1):
                    self.caches[(name, instance)] = AgentCache(
                        AgentCacheOptions(
                            client=self.clients[instance],
                            name=name,
                            default_ttl=DEFAULT_TTL,
                            tier_defaults=_tier_defaults(name),
                            telemetry=TelemetryOptions(registry=self.registry),
                            # Semantics, not timeouts: a loaded machine may stall a reply past the default 1 s.
                            reliability={"on_error": "raise", "timeout_s": 10.0},
                        )
                    )

        self.run(open_all())

    def teardown(self) -> None:
        async def close_all() -> None:
            for cache in self.caches.values():
                await cache.close()
            for client in self.clients:
                await client.aclose()

        try:
            if self.caches or self.clients:
                self.run(close_all())
        finally:
            self.runner.close()

    @contextlib.contextmanager
    def scoped(self, name: str, instance: int, tenant: str) -> Iterator[AgentCache]:
        cache = self.caches[(name, instance)]
        if not tenant:
            yield cache
            return
        with cache.tenant(tenant):
            yield cache

    # ── LLM ─────────────────────────────────────────────────────────────────

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        instance=st.sampled_from((0, 1)),
        tenant=tenants,
        model=models,
        prompt=prompts,
        answer=values,
        ttl=ttls,
    )
    def llm_store(
        self, name: str, instance: int, tenant: str, model: str, prompt: str, answer: str, ttl: int | None
    ) -> None:
        async def store() -> int:
            with self.scoped(name, instance, tenant) as cache:
                key = await cache.llm.store(_params(model, prompt), answer, LlmStoreOptions(ttl=ttl))
            return int(await self.clients[0].pttl(key))

        remaining_ms = self.run(store())
        self.llm[(name, tenant, model, prompt)] = answer
        expected_ms = (ttl or DEFAULT_TTL) * 1000  # per call > tier default (none here) > default TTL
        assert expected_ms - 10_000 < remaining_ms <= expected_ms

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        instance=st.sampled_from((0, 1)),
        tenant=tenants,
        model=models,
        prompt=prompts,
    )
    def llm_check(self, name: str, instance: int, tenant: str, model: str, prompt: str) -> None:
        async def check() -> Any:
            with self.scoped(name, instance, tenant) as cache:
                return await cache.llm.check(_params(model, prompt))

        result = self.run(check())
        expected = self.llm.get((name, tenant, model, prompt))
        assert (result.hit, result.response) == (expected is not None, expected)

    @rule(name=st.sampled_from(CACHE_NAMES), instance=st.sampled_from((0, 1)), model=models)
    def llm_invalidate_by_model(self, name: str, instance: int, model: str) -> None:
        deleted = self.run(self.caches[(name, instance)].llm.invalidate_by_model(model))
        gone = [key for key in self.llm if key[0] == name and key[2] == model]
        for key in gone:
            del self.llm[key]
        assert deleted == len(gone)

    @rule(name=st.sampled_from(CACHE_NAMES), model=models, prompt=prompts, answers=st.tuples(values, values))
    def llm_concurrent_writers_and_invalidation(
        self, name: str, model: str, prompt: str, answers: tuple[str, str]
    ) -> None:
        """Two processes store one request while a third invalidates its model: whatever the interleaving,
        the entry ends up stored with one of the answers (and still indexed) or gone."""

        async def race() -> Any:
            params = _params(model, prompt)
            await asyncio.gather(
                self.caches[(name, 0)].llm.store(params, answers[0]),
                self.caches[(name, 1)].llm.invalidate_by_model(model),
                self.caches[(name, 1)].llm.store(params, answers[1]),
            )
            return await self.caches[(name, 0)].llm.check(params)

        result = self.run(race())
        for key in [key for key in self.llm if key[0] == name and key[2] == model and key != (name, "", model, prompt)]:
            if not self.run(self.caches[(name, 0)].llm.check(_params(key[2], key[3]))).hit:
                del self.llm[key]  # the invalidation may have run before or after the stores
        if result.hit:
            assert result.response in answers
            self.llm[(name, "", model, prompt)] = result.response
        else:
            self.llm.pop((name, "", model, prompt), None)

    # ── tool ────────────────────────────────────────────────────────────────

    def cacheable(self, name: str, tool: str) -> bool:
        policy = self.policies.get((name, tool))
        return policy is None or policy.cacheable

    def expected_tool_ttl(self, name: str, tool: str, per_call: int | None) -> int:
        """Per call > tool policy > tier default > default TTL (docs/concepts.md)."""
        policy = self.policies.get((name, tool))
        if per_call is not None:
            return per_call
        if policy is not None and policy.ttl is not None:
            return policy.ttl
        return _tier_defaults(name).get("tool", {}).get("ttl", DEFAULT_TTL)

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        tool=tool_names,
        ttl=ttls,
        cacheable=st.booleans(),
    )
    def tool_set_policy(self, name: str, tool: str, ttl: int | None, cacheable: bool) -> None:
        """Set in one process; the other picks it up on its next policy refresh (done at once here)."""

        async def set_policy() -> None:
            await self.caches[(name, 0)].tool.set_policy(tool, ToolPolicy(ttl=ttl, cacheable=cacheable))
            await self.caches[(name, 1)].tool.refresh_policies()

        self.run(set_policy())
        self.policies[(name, tool)] = ToolPolicy(ttl=ttl, cacheable=cacheable)

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        instance=st.sampled_from((0, 1)),
        tenant=tenants,
        tool=tool_names,
        arg=awkward_names,
        result=values,
        ttl=ttls,
        data=st.data(),
    )
    def tool_store(
        self,
        name: str,
        instance: int,
        tenant: str,
        tool: str,
        arg: str,
        result: str,
        ttl: int | None,
        data: st.DataObject,
    ) -> None:
        if self.policies and data.draw(st.booleans()):
            name, tool = data.draw(st.sampled_from(sorted(self.policies)))  # a tool with a policy, often

        async def store() -> int | None:
            with self.scoped(name, instance, tenant) as cache:
                await cache.tool.store(tool, {"q": arg}, result, ToolStoreOptions(ttl=ttl))
                found = await cache.tool.check(tool, {"q": arg})
            return await self.clients[0].pttl(found.key) if found.hit else None

        remaining_ms = self.run(store())
        if not self.cacheable(name, tool):
            assert remaining_ms is None  # not stored, and not served
            return
        self.tool[(name, tenant, tool, arg)] = result
        expected_ms = self.expected_tool_ttl(name, tool, ttl) * 1000
        assert remaining_ms is not None and expected_ms - 10_000 < remaining_ms <= expected_ms

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        instance=st.sampled_from((0, 1)),
        tenant=tenants,
        tool=tool_names,
        arg=awkward_names,
    )
    def tool_check(self, name: str, instance: int, tenant: str, tool: str, arg: str) -> None:
        async def check() -> Any:
            with self.scoped(name, instance, tenant) as cache:
                return await cache.tool.check(tool, {"q": arg})

        result = self.run(check())
        expected = self.tool.get((name, tenant, tool, arg)) if self.cacheable(name, tool) else None
        assert (result.hit, result.response) == (expected is not None, expected)

    @precondition(lambda self: bool(self.tool))
    @rule(data=st.data(), instance=st.sampled_from((0, 1)))
    def tool_invalidate(self, data: st.DataObject, instance: int) -> None:
        name, tenant, tool, arg = data.draw(st.sampled_from(sorted(self.tool)))

        async def invalidate() -> bool:
            with self.scoped(name, instance, tenant) as cache:
                return await cache.tool.invalidate(tool, {"q": arg})

        assert self.run(invalidate()) is True
        del self.tool[(name, tenant, tool, arg)]

    @rule(name=st.sampled_from(CACHE_NAMES), instance=st.sampled_from((0, 1)), tool=tool_names)
    def tool_invalidate_by_tool(self, name: str, instance: int, tool: str) -> None:
        deleted = self.run(self.caches[(name, instance)].tool.invalidate_by_tool(tool))
        gone = [key for key in self.tool if key[0] == name and key[2] == tool]
        for key in gone:
            del self.tool[key]
        assert deleted == len(gone)

    # ── session ─────────────────────────────────────────────────────────────

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        instance=st.sampled_from((0, 1)),
        tenant=tenants,
        thread=awkward_names,
        field=awkward_names,
        value=values,
    )
    def session_set(self, name: str, instance: int, tenant: str, thread: str, field: str, value: str) -> None:
        async def set_field() -> None:
            with self.scoped(name, instance, tenant) as cache:
                await cache.session.set(thread, field, value)

        self.run(set_field())
        self.session.setdefault((name, tenant, thread), {})[field] = value

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        instance=st.sampled_from((0, 1)),
        tenant=tenants,
        thread=awkward_names,
        field=awkward_names,
    )
    def session_get(self, name: str, instance: int, tenant: str, thread: str, field: str) -> None:
        async def get() -> str | None:
            with self.scoped(name, instance, tenant) as cache:
                return await cache.session.get(thread, field)

        assert self.run(get()) == self.session.get((name, tenant, thread), {}).get(field)

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        tenant=tenants,
        thread=awkward_names,
        field=awkward_names,
        written=st.tuples(values, values),
    )
    def session_concurrent_writers(
        self, name: str, tenant: str, thread: str, field: str, written: tuple[str, str]
    ) -> None:
        """Two processes write one field at once: the field holds one of the values, in both processes."""

        async def race() -> tuple[str | None, str | None]:
            async def write(instance: int, value: str) -> None:
                with self.scoped(name, instance, tenant) as cache:
                    await cache.session.set(thread, field, value)

            async def read(instance: int) -> str | None:
                with self.scoped(name, instance, tenant) as cache:
                    return await cache.session.get(thread, field)

            await asyncio.gather(write(0, written[0]), write(1, written[1]))
            return await read(0), await read(1)

        seen = self.run(race())
        assert seen[0] == seen[1] and seen[0] in written
        self.session.setdefault((name, tenant, thread), {})[field] = seen[0]

    @rule(name=st.sampled_from(CACHE_NAMES), instance=st.sampled_from((0, 1)), tenant=tenants, thread=awkward_names)
    def session_get_all(self, name: str, instance: int, tenant: str, thread: str) -> None:
        async def get_all() -> dict[str, str]:
            with self.scoped(name, instance, tenant) as cache:
                return await cache.session.get_all(thread)

        assert self.run(get_all()) == self.session.get((name, tenant, thread), {})

    @rule(
        name=st.sampled_from(CACHE_NAMES),
        instance=st.sampled_from((0, 1)),
        tenant=tenants,
        thread=awkward_names,
        field=awkward_names,
    )
    def session_delete(self, name: str, instance: int, tenant: str, thread: str, field: str) -> None:
        async def delete() -> bool:
            with self.scoped(name, instance, tenant) as cache:
                return await cache.session.delete(thread, field)

        fields = self.session.get((name, tenant, thread), {})
        assert self.run(delete()) is (field in fields)
        fields.pop(field, None)

    @rule(name=st.sampled_from(CACHE_NAMES), instance=st.sampled_from((0, 1)), tenant=tenants, thread=awkward_names)
    def session_destroy_thread(self, name: str, instance: int, tenant: str, thread: str) -> None:
        async def destroy() -> int:
            with self.scoped(name, instance, tenant) as cache:
                return await cache.session.destroy_thread(thread)

        assert self.run(destroy()) == len(self.session.pop((name, tenant, thread), {}))

    @rule(name=st.sampled_from(CACHE_NAMES), instance=st.sampled_from((0, 1)), tenant=tenants, thread=awkward_names)
    def session_touch(self, name: str, instance: int, tenant: str, thread: str) -> None:
        async def touch() -> int:
            with self.scoped(name, instance, tenant) as cache:
                return await cache.session.touch(thread)

        assert self.run(touch()) == len(self.session.get((name, tenant, thread), {}))

    @precondition(lambda self: bool(self.session))
    @rule(data=st.data(), instance=st.sampled_from((0, 1)))
    def session_read_a_resplit_address(self, data: st.DataObject, instance: int) -> None:
        """Read the thread whose address joins to the same text as a stored one, split elsewhere.

        ``("acme", "x")`` and ``("", "acme:x")``, or cache ``fl`` thread ``x:y`` and cache ``fl:x`` thread ``y``:
        a layout that joins names with a separator gives them one key. Random draws rarely hit such pairs.
        """
        name, tenant, thread = data.draw(st.sampled_from(sorted(self.session)))
        joined = ":".join(part for part in (name, tenant, thread) if part)
        aliases = _resplits(joined)
        alias = data.draw(st.sampled_from(aliases)) if aliases else (name, tenant, thread)

        async def get_all() -> dict[str, str]:
            with self.scoped(alias[0], instance, alias[1]) as cache:
                return await cache.session.get_all(alias[2])

        assert self.run(get_all()) == self.session.get(alias, {})

    # ── whole cache ─────────────────────────────────────────────────────────

    @rule(name=st.sampled_from(CACHE_NAMES), instance=st.sampled_from((0, 1)))
    def flush(self, name: str, instance: int) -> None:
        self.run(self.caches[(name, instance)].flush())
        self.llm = {key: value for key, value in self.llm.items() if key[0] != name}
        self.tool = {key: value for key, value in self.tool.items() if key[0] != name}
        self.session = {key: value for key, value in self.session.items() if key[0] != name}

    @invariant()
    def every_stored_answer_is_still_there(self) -> None:
        """Nothing the model holds was lost by an operation on another cache, tenant, tool or thread."""
        if not self.caches:
            return

        async def read_back() -> list[tuple[Any, Any]]:
            pairs: list[tuple[Any, Any]] = []
            for (name, tenant, model, prompt), answer in self.llm.items():
                with self.scoped(name, 1, tenant) as cache:
                    pairs.append(((await cache.llm.check(_params(model, prompt))).response, answer))
            for (name, tenant, tool, arg), result in self.tool.items():
                if not self.cacheable(name, tool):
                    continue
                with self.scoped(name, 0, tenant) as cache:
                    pairs.append(((await cache.tool.check(tool, {"q": arg})).response, result))
            for (name, tenant, thread), fields in self.session.items():
                with self.scoped(name, 1, tenant) as cache:
                    pairs.append((await cache.session.get_all(thread), fields))
            return pairs

        for actual, expected in self.run(read_back()):
            assert actual == expected


def _resplits(joined: str) -> list[tuple[str, str, str]]:
    """Every (cache name, tenant, thread) whose parts joined with ':' give ``joined``."""
    found = []
    for name in CACHE_NAMES:
        if not joined.startswith(name + ":"):
            continue
        rest = joined[len(name) + 1 :]
        found.append((name, "", rest))
        for at, char in enumerate(rest):
            if char == ":" and 0 < at < len(rest) - 1:
                found.append((name, rest[:at], rest[at + 1 :]))
    return found


def _params(model: str, prompt: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_tiers_follow_the_model_on_standalone_valkey(valkey_server: ServerHandle) -> None:
    class Standalone(TierModel):
        @staticmethod
        def client_factory() -> Any:
            return Valkey.from_url(valkey_server.url, decode_responses=False)

    run_state_machine_as_test(Standalone, settings=_SETTINGS)


@pytest.mark.slow
def test_tiers_follow_the_model_on_a_cluster(valkey_cluster: EmbeddedCluster) -> None:
    class Cluster(TierModel):
        @staticmethod
        def client_factory() -> Any:
            return cluster_client(valkey_cluster.startup_nodes, decode_responses=False)

    run_state_machine_as_test(Cluster, settings=settings(_SETTINGS, max_examples=8))
