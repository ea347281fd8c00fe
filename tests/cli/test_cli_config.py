"""``agent-cache config show | apply | diff``: the operator's YAML and writer, from a terminal."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from valkey.asyncio import Valkey

from agent_cache import ConfigurationError, ToolPolicy
from agent_cache.commands.config import SPEC_FIELDS, parse_resource
from agent_cache.config import CacheConfig, apply_config, read_config
from agent_cache_operator.crd import spec_schema
from agent_cache_operator.spec import parse_spec
from tests.cli.conftest import Populated, make_cache
from tests.cli.running import agent_cache

EXAMPLES = Path(__file__).parents[2] / "manifests" / "examples"
RESOURCE = """\
apiVersion: agentcache.dev/v1alpha1
kind: AgentCache
metadata:
  name: support-bot
spec:
  prefix: support_bot
  valkey: {url: "valkey://valkey:6379"}
  tiers: {llm: {ttl: 86400}, tool: {ttl: 600}}
  toolPolicies:
    get_weather: {ttl: 600}
    send_email: {cacheable: false}
"""


# ── the file (pure) ──────────────────────────────────────────────────────────


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_operators_example_files_read_as_the_operator_reads_them(example: Path) -> None:
    import yaml

    document = yaml.safe_load(example.read_text())
    operator_view = parse_spec(document["spec"], document["metadata"]["name"])
    resource = parse_resource(example.read_text(), example.name)
    assert (resource.name, resource.config) == (operator_view.prefix, operator_view.config)
    assert resource.warnings == ()


def test_the_cache_name_is_name_option_then_prefix_then_metadata_name() -> None:
    assert parse_resource(RESOURCE, "f").name == "support_bot"
    assert parse_resource(RESOURCE.replace("  prefix: support_bot\n", ""), "f").name == "support-bot"
    assert parse_resource(RESOURCE, "f", name="staging_bot").name == "staging_bot"
    config = parse_resource(RESOURCE, "f").config
    assert config.tiers == {"llm": 86400, "tool": 600}
    assert config.tool_policies == {"get_weather": ToolPolicy(ttl=600), "send_email": ToolPolicy(cacheable=False)}


def test_several_resources_need_a_name() -> None:
    two = RESOURCE + "---\n" + RESOURCE.replace("support_bot", "billing_bot").replace("ttl: 600}}", "ttl: 60}}")
    with pytest.raises(ConfigurationError, match=r"2 AgentCache resources \(support_bot, billing_bot\)"):
        parse_resource(two, "f")
    assert parse_resource(two, "f", name="billing_bot").config.tiers["tool"] == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: ConfigMap\n", "f has no AgentCache resource"),
        ("kind: [unclosed\n", "f is not valid YAML"),
        ("kind: AgentCache\nmetadata: {name: x}\n", "f: spec is required"),
        (RESOURCE.replace("ttl: 600}}", "ttl: -1}}"), "f: spec.tiers.tool.ttl must be a positive number"),
        (RESOURCE.replace("prefix: support_bot", "prefix: 'support bot'"), "f: spec.prefix: cache name 'support bot'"),
        (RESOURCE.replace("  prefix: support_bot\n", "").replace("support-bot", "Support Bot"), "metadata.name"),
    ],
)
def test_invalid_files_name_the_file_and_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        parse_resource(text, "f")


def test_unknown_fields_are_found_at_every_level_and_foreign_api_versions_warned_about() -> None:
    text = (
        RESOURCE.replace("toolPolicies:", "toolPolicy:")
        .replace("agentcache.dev/v1alpha1", "example.com/v1")
        .replace("llm: {ttl: 86400}", "llm: {tll: 86400}")
    )
    resource = parse_resource(text, "f")
    assert resource.warnings == ("f: apiVersion 'example.com/v1' is not agentcache.dev/v1alpha1; reading it anyway",)
    assert resource.unknown == ("spec.toolPolicy", "spec.tiers.llm.tll")
    assert resource.config.tool_policies == {}
    typo = RESOURCE.replace("send_email: {cacheable: false}", "send_email: {cachable: false}")
    assert parse_resource(typo, "f").unknown == ("spec.toolPolicies.send_email.cachable",)
    assert parse_resource(RESOURCE, "f").unknown == ()


def test_every_field_of_the_crd_is_a_field_here() -> None:
    """config apply refused spec.modelPolicies and spec.nearCache, which the CRD has, as "not AgentCache fields"."""
    assert set(spec_schema()["properties"]) == SPEC_FIELDS
    text = RESOURCE + '  modelPolicies:\n    "gpt-4o*": {ttl: 7200}\n  nearCache: {enabled: true, maxEntries: 500}\n'
    resource = parse_resource(text, "f")
    assert resource.unknown == ()
    assert resource.config.model_policies["gpt-4o*"].ttl == 7200
    assert resource.config.near_cache is not None and resource.config.near_cache.max_entries == 500


# ── against Valkey ─────────────────────────────────────────────────────────────


@pytest.fixture
def resource_file(tmp_path: Path) -> Path:
    path = tmp_path / "agentcache.yaml"
    path.write_text(RESOURCE)
    return path


def config_cli(populated: Populated, *args: str) -> tuple[int, str, str]:
    done = agent_cache("config", *args, "--url", populated.url)
    return done.returncode, done.stdout, done.stderr


async def test_apply_writes_what_the_operator_would(
    populated: Populated, valkey_client: Valkey, resource_file: Path
) -> None:
    code, out, err = config_cli(populated, "apply", "-f", str(resource_file), "--dry-run")
    assert code == 0, err
    assert "+toolPolicies:" in out and "dry run: would apply" in out
    assert await read_config(valkey_client, "support_bot") is None

    code, out, err = config_cli(populated, "apply", "-f", str(resource_file))
    assert code == 0, err
    applied = await read_config(valkey_client, "support_bot")
    expected = parse_resource(RESOURCE, "f").config
    assert applied is not None and applied.config == expected and applied.version == expected.version
    assert applied.source.startswith("cli:")
    assert out.strip() == f"applied config version {expected.version} to cache support_bot"
    assert await valkey_client.hget("support_bot:__tool_policies", "send_email") == b'{"cacheable": false}'

    code, out, _ = config_cli(populated, "apply", "-f", str(resource_file))
    assert (code, out.strip()) == (0, f"unchanged: cache support_bot already runs config version {expected.version}")


async def test_diff_exit_codes_and_lines(populated: Populated, valkey_client: Valkey, resource_file: Path) -> None:
    await apply_config(valkey_client, "support_bot", parse_resource(RESOURCE, "f").config, "test")
    code, out, _ = config_cli(populated, "diff", "-f", str(resource_file))
    assert code == 0 and out.startswith("no differences: ")
    await asyncio.to_thread(
        resource_file.write_text, RESOURCE.replace("get_weather: {ttl: 600}", "get_weather: {ttl: 900}")
    )
    code, out, _ = config_cli(populated, "diff", "-f", str(resource_file))
    assert code == 1
    changed = [line for line in out.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-    ttl: 600", "+    ttl: 900"]
    assert "\x1b" not in out


async def test_show_prints_a_resource_that_applies_back_unchanged(
    populated: Populated, valkey_client: Valkey, tmp_path: Path
) -> None:
    code, _, err = config_cli(populated, "show", "--name", "support_bot")
    assert code == 3 and "has no live config" in err
    config = CacheConfig.from_spec({"defaultTTL": 60, "costOverrides": {"gpt-4o": {"inputPer1k": 1, "outputPer1k": 2}}})
    version = await apply_config(valkey_client, "support_bot", config, "test")

    code, out, err = config_cli(populated, "show", "--name", "support_bot")
    assert code == 0, err
    assert out.startswith(f"# Live config of cache support_bot: version {version}\n# written by test at ")
    saved = tmp_path / "shown.yaml"
    await asyncio.to_thread(saved.write_text, out)
    assert config_cli(populated, "diff", "-f", str(saved))[0] == 0
    assert parse_resource(out, "shown").config == config

    code, out, _ = config_cli(populated, "show", "--name", "support_bot", "--json")
    shown = json.loads(out)
    assert (shown["version"], shown["source"], shown["spec"], shown["instances"]) == (
        version,
        "test",
        config.to_spec(),
        [],
    )


async def test_a_cache_the_operator_manages_needs_force(
    populated: Populated, valkey_client: Valkey, resource_file: Path
) -> None:
    await apply_config(valkey_client, "support_bot", CacheConfig(default_ttl=5), "operator:shop/support-bot")
    code, _, err = config_cli(populated, "apply", "-f", str(resource_file))
    assert code == 1
    assert "managed by the Kubernetes operator (AgentCache shop/support-bot)" in err
    applied = await read_config(valkey_client, "support_bot")
    assert applied is not None and applied.config.default_ttl == 5
    code, _, err = config_cli(populated, "apply", "-f", str(resource_file), "--force")
    assert code == 0, err
    applied = await read_config(valkey_client, "support_bot")
    assert applied is not None and applied.config.default_ttl is None


async def test_wait_until_running_instances_apply_it(
    populated: Populated, valkey_client: Valkey, resource_file: Path
) -> None:
    async with make_cache(valkey_client) as running:
        await running.live_config.refresh()  # reports "no config" as its version
        done = await asyncio.to_thread(
            agent_cache, "config", "apply", "-f", str(resource_file), "--url", populated.url, "--wait", "60"
        )
        assert done.returncode == 0, done.stderr
        assert running.live_config.version == parse_resource(RESOURCE, "f").config.version
        assert running.tool.effective_ttl("lookup_order") == 600  # the live tool tier TTL, applied
    assert (
        done.stdout.splitlines()[-1]
        == f"all 1 live instance(s) of support_bot run version {running.live_config.version}"
    )


async def test_wait_gives_up_on_an_instance_that_never_applies(
    populated: Populated, valkey_client: Valkey, resource_file: Path
) -> None:
    stuck = {"version": "0123456789abcdef", "seen": time.time() + 3600, "host": "old-pod", "pid": 1}
    await valkey_client.hset("support_bot:__instances", "old-pod:1:x", json.dumps(stuck))
    code, _, err = config_cli(populated, "apply", "-f", str(resource_file), "--wait", "0.5")
    assert code == 1
    assert "1 of 1 live instance(s) still run another version: old-pod:1:x (0123456789abcdef)" in err


def test_a_bad_file_is_a_usage_error(populated: Populated, tmp_path: Path) -> None:
    code, out, err = config_cli(populated, "apply", "-f", str(tmp_path / "missing.yaml"))
    assert (code, out) == (2, "") and "cannot read" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text(RESOURCE.replace("tool: {ttl: 600}", "tool: {ttl: soon}"))
    code, _, err = config_cli(populated, "diff", "-f", str(broken))
    assert code == 2 and "spec.tiers.tool.ttl must be a positive number of seconds" in err


async def test_a_misspelled_field_is_refused_and_nothing_is_written(
    populated: Populated, valkey_client: Valkey, resource_file: Path, tmp_path: Path
) -> None:
    assert config_cli(populated, "apply", "-f", str(resource_file))[0] == 0
    before = await read_config(valkey_client, "support_bot")
    typo = tmp_path / "typo.yaml"
    typo.write_text(RESOURCE.replace("toolPolicies:", "toolPolicy:"))
    code, out, err = config_cli(populated, "apply", "-f", str(typo))
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        f"error: {typo}: spec.toolPolicy is not an AgentCache field (a typo?); nothing was written: fix the file, "
        "or pass --force to apply the rest"
    ]
    assert await read_config(valkey_client, "support_bot") == before
    assert await valkey_client.hget("support_bot:__tool_policies", "send_email") == b'{"cacheable": false}'
    code, _, err = config_cli(populated, "diff", "-f", str(typo))
    assert code == 2 and "spec.toolPolicy is not an AgentCache field (a typo?)" in err and "--force" not in err

    code, _, err = config_cli(populated, "apply", "-f", str(typo), "--force")
    assert code == 0, err
    assert "warning:" in err and "spec.toolPolicy is not an AgentCache field; ignored (--force)" in err
    applied = await read_config(valkey_client, "support_bot")
    assert applied is not None and applied.config.tool_policies == {}
