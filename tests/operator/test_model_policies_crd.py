"""``spec.modelPolicies``: the CRD accepts and rejects what it should, and the operator pushes the policies to Valkey
(on the Kubernetes API emulator) where a running agent applies them per pattern, keeping its own other patterns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from valkey.asyncio import Valkey

from agent_cache import AgentCache, AgentCacheOptions, ConfigRefreshOptions, ModelPolicy
from agent_cache_operator.spec import InvalidSpecError, parse_spec
from tests.operator.conftest import Kube, OperatorProcess, agentcache, condition, eventually
from tests.operator.crd_validation import validate
from tests.servers import ServerHandle

VALKEY = {"url": "valkey://valkey.shop.svc:6379"}


def resource(**spec: Any) -> dict[str, Any]:
    return agentcache("support-bot", VALKEY, **spec)


def test_the_schema_accepts_model_policies_and_rejects_bad_ones() -> None:
    good = {
        "gpt-4o*": {"ttl": 7200, "cacheFinishReasons": ["stop", "tool_calls"]},
        "o1-*": {"cacheable": False},
        "claude-3-haiku": {"cacheEmpty": False},
    }
    assert validate(resource(modelPolicies=good)) == []
    assert any(
        "cacheFinishReasons" in e for e in validate(resource(modelPolicies={"m": {"cacheFinishReasons": "stop"}}))
    )
    assert any("cachable" in e for e in validate(resource(modelPolicies={"m": {"cachable": False}})))
    assert validate(resource(modelPolicies={"m": {"ttl": 0}})) == [
        ".spec.modelPolicies.m.ttl: must be a positive number of seconds"
    ]
    assert any("''" in e or "short" in e for e in validate(resource(modelPolicies={"m": {"cacheFinishReasons": [""]}})))


def test_the_operator_refuses_a_bad_glob_naming_it() -> None:
    parsed = parse_spec({"valkey": VALKEY, "modelPolicies": {"gpt-4o*": {"ttl": 60}}}, "support-bot")
    assert parsed.config.model_policies == {"gpt-4o*": ModelPolicy(ttl=60)}
    with pytest.raises(InvalidSpecError, match=r"spec\.modelPolicies key 'gpt-\[4o' is not a valid glob"):
        parse_spec({"valkey": VALKEY, "modelPolicies": {"gpt-[4o": {"ttl": 60}}}, "support-bot")


async def _ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    body = await kube.aget("agentcaches", name, namespace)
    return body if condition(body, "Ready").get("status") == "True" else None


async def _ttl(cache: AgentCache, client: Valkey, model: str) -> int:
    key = await cache.llm.store({"model": model, "messages": [{"role": "user", "content": "hi"}]}, "answer")
    return int(await client.ttl(key))


@pytest.mark.k8s
@pytest.mark.valkey
async def test_the_operator_pushes_model_policies_and_the_agent_keeps_its_other_patterns(
    kube: Kube,
    namespace: str,
    operator: Callable[..., OperatorProcess],
    valkey_server: ServerHandle,
    valkey_client: Valkey,
) -> None:
    operator()
    cache = AgentCache(
        AgentCacheOptions(
            client=valkey_client, name="support-bot", config_refresh=ConfigRefreshOptions(interval_ms=1000)
        )
    )
    try:
        await cache.llm.set_model_policy("gpt-4o*", ModelPolicy(ttl=100))  # the agent's own, before the platform's
        await cache.llm.set_model_policy("claude-*", ModelPolicy(ttl=60))
        spec = {"gpt-4o*": {"ttl": 3000}, "o1-*": {"cacheable": False}}
        await kube.aapply(
            agentcache("support-bot", {"host": valkey_server.host, "port": valkey_server.port}, modelPolicies=spec),
            namespace,
        )
        body = await eventually(lambda: _ready(kube, namespace, "support-bot"), what="the AgentCache becomes Ready")
        version = body["status"]["configVersion"]
        await eventually(lambda: cache.live_config.version == version, what="the library applies the config")

        assert 2990 <= await _ttl(cache, valkey_client, "gpt-4o-mini") <= 3000  # the platform's wins per pattern
        assert 50 <= await _ttl(cache, valkey_client, "claude-3") <= 60  # the agent's other pattern stays
        assert (await valkey_client.exists(await cache.llm.store({"model": "o1-mini"}, "x"))) == 0
        assert await valkey_client.hgetall("support-bot:__model_policies") == {
            b"gpt-4o*": b'{"ttl": 3000}',
            b"o1-*": b'{"cacheable": false}',
            b"claude-*": b'{"ttl": 60}',
        }

        # The platform stops naming gpt-4o*: the agent's own policy of that pattern is back.
        await kube.aapply(
            agentcache(
                "support-bot",
                {"host": valkey_server.host, "port": valkey_server.port},
                modelPolicies={"o1-*": {"cacheable": False}},
            ),
            namespace,
        )
        await eventually(
            lambda: cache.llm.get_model_policy("gpt-4o") == ModelPolicy(ttl=100), what="the agent's policy is back"
        )
        assert 90 <= await _ttl(cache, valkey_client, "gpt-4o") <= 100
        assert cache.llm.get_model_policy("o1-mini") == ModelPolicy(cacheable=False)
    finally:
        await cache.close()
