"""The bundled cost table, the model-name lookup rules and the cost arithmetic (no server needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

from agent_cache._errors import AgentCacheUsageError
from agent_cache.cost import DEFAULT_COST_TABLE, CostTable
from agent_cache.types import ModelCost

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "generate_cost_table.py"
COMMITTED_TABLE = REPO_ROOT / "library" / "agent_cache" / "cost_table.json"

GPT = ModelCost(0.0025, 0.01)
SONNET = ModelCost(0.003, 0.015)
SONNET_35 = ModelCost(0.0031, 0.0151)
BEDROCK_SONNET = ModelCost(0.0032, 0.0152)
GEMINI = ModelCost(0.00125, 0.01)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=60)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_cost_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ─── The bundled table ────────────────────────────────────────────────────────


def test_importing_agent_cache_does_not_parse_the_table() -> None:
    code = "import agent_cache, agent_cache.cost as c; print(repr(c.DEFAULT_COST_TABLE))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "not loaded yet" in result.stdout


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-pro"])
def test_default_table_prices_popular_models_plausibly(model: str) -> None:
    price = DEFAULT_COST_TABLE[model]
    # Dollars per 1k tokens: somewhere between a hundredth of a cent and a dollar, output dearer than input.
    assert 0.00001 <= price.input_per_1k <= price.output_per_1k <= 1.0


def test_default_table_has_gpt_4o_at_its_list_price() -> None:
    assert DEFAULT_COST_TABLE["gpt-4o"] == ModelCost(0.0025, 0.01)


def test_default_table_is_large_and_read_only() -> None:
    assert len(DEFAULT_COST_TABLE) > 1000
    assert "gpt-4o" in DEFAULT_COST_TABLE
    assert "sample_spec" not in DEFAULT_COST_TABLE
    with pytest.raises(TypeError):
        cast(Any, DEFAULT_COST_TABLE)["gpt-4o"] = ModelCost(0, 0)


def test_committed_table_is_the_generators_canonical_output_for_the_pinned_version() -> None:
    script = load_script()
    text = COMMITTED_TABLE.read_text(encoding="utf-8")
    document = json.loads(text)
    assert document["source_version"] == script.LITELLM_VERSION
    assert "do not edit by hand" in document["_generated"]
    models = {name: tuple(row) for name, row in document["models"].items()}
    # A hand edit that breaks sorting, the per-1k conversion or the one-line-per-model layout shows up here.
    assert script.render_table(models, script.LITELLM_VERSION) == text


# ─── Lookup rules ─────────────────────────────────────────────────────────────


@pytest.fixture
def table() -> CostTable:
    return CostTable(
        {
            "gpt-4o": GPT,
            "claude-sonnet-4-5": SONNET,
            "claude-3-5-sonnet-20241022": SONNET_35,
            "anthropic.claude-3-5-sonnet-20241022-v2:0": BEDROCK_SONNET,
            "gemini-2.5-pro": GEMINI,
        },
        use_default=False,
    )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", GPT),
        ("openai/gpt-4o", GPT),
        ("azure/gpt-4o", GPT),
        ("openrouter/openai/gpt-4o", GPT),
        ("anthropic/claude-3-5-sonnet-20241022", SONNET_35),
        ("bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0", BEDROCK_SONNET),
        ("bedrock/converse/anthropic.claude-3-5-sonnet-20241022-v2:0", BEDROCK_SONNET),
        ("vertex_ai/gemini-2.5-pro", GEMINI),
        ("gemini/gemini-2.5-pro", GEMINI),
        ("claude-sonnet-4-5-20250929", SONNET),
        ("anthropic/claude-sonnet-4-5-20250929", SONNET),
        ("vertex_ai/claude-sonnet-4-5@20250929", SONNET),
        ("claude-sonnet-4-5-latest", SONNET),
        ("gpt-4o-2024-08-06", GPT),
        ("GPT-4o", GPT),
        ("OpenAI/GPT-4O-2024-08-06", GPT),
    ],
)
def test_lookup_resolves_provider_prefixes_suffixes_and_case(table: CostTable, model: str, expected: ModelCost) -> None:
    assert table.lookup(model) == expected


@pytest.mark.parametrize(
    "model",
    [
        "unknown-model",
        "my-gateway/gpt-4o",  # not a known provider: nothing is stripped
        "gpt-4o-mini",  # a different model, not a suffix
        "gpt-4",
        "openai/",
        "",
    ],
)
def test_lookup_of_unpriced_model_is_none(table: CostTable, model: str) -> None:
    assert table.lookup(model) is None
    assert table.cost(model, 10, 10) is None
    assert table.cost_micros(model, 10, 10) is None


def test_exact_name_beats_stripped_name() -> None:
    azure = ModelCost(0.005, 0.02)
    table = CostTable({"gpt-4o": GPT, "azure/gpt-4o": azure}, use_default=False)
    assert table.lookup("azure/gpt-4o") == azure
    assert table.lookup("openai/gpt-4o") == GPT


def test_more_specific_prefix_level_is_tried_before_a_shorter_name() -> None:
    vertex = ModelCost(0.004, 0.02)
    table = CostTable({"claude-x": SONNET, "vertex_ai/claude-x": vertex}, use_default=False)
    assert table.lookup("vertex_ai/claude-x@20990101") == vertex


def test_exact_case_beats_case_insensitive_match() -> None:
    upper = ModelCost(0.5, 0.5)
    table = CostTable({"gpt-4o": GPT, "GPT-4o": upper}, use_default=False)
    assert table.lookup("GPT-4o") == upper
    assert table.lookup("gpt-4o") == GPT


def test_default_table_resolves_prefixed_names() -> None:
    table = CostTable()
    assert "openai/gpt-4o" not in DEFAULT_COST_TABLE
    assert table.lookup("openai/gpt-4o") == DEFAULT_COST_TABLE["gpt-4o"]
    assert table.lookup("openrouter/openai/gpt-4o") == DEFAULT_COST_TABLE["gpt-4o"]
    assert table.lookup("anthropic/claude-sonnet-4-5") == DEFAULT_COST_TABLE["claude-sonnet-4-5"]
    assert table.lookup("bedrock/anthropic.claude-sonnet-4-5-20250929-v1:0") is not None
    assert table.lookup("vertex_ai/gemini-2.5-pro") is not None


def test_overrides_win_over_defaults_at_every_step() -> None:
    mine = ModelCost(1.0, 2.0)
    table = CostTable({"gpt-4o": mine, "claude-sonnet-4-5": mine})
    assert table.lookup("gpt-4o") == mine
    assert table.lookup("openai/gpt-4o") == mine
    # The default table has its own azure/gpt-4o and claude-sonnet-4-5-20250929; the override still wins.
    assert "azure/gpt-4o" in DEFAULT_COST_TABLE
    assert table.lookup("azure/gpt-4o") == mine
    assert "claude-sonnet-4-5-20250929" in DEFAULT_COST_TABLE
    assert table.lookup("claude-sonnet-4-5-20250929") == mine
    # Models without an override still come from the defaults.
    assert table.lookup("gemini-2.5-pro") == DEFAULT_COST_TABLE["gemini-2.5-pro"]


def test_use_default_false_disables_the_bundled_table() -> None:
    assert CostTable(use_default=False).lookup("gpt-4o") is None
    only = CostTable({"my-model": GPT}, use_default=False)
    assert only.lookup("my-model") == GPT
    assert only.lookup("gpt-4o") is None


def test_memo_stays_bounded() -> None:
    table = CostTable({"gpt-4o": GPT}, use_default=False)
    for index in range(10_000):
        table.lookup(f"model-{index}")
    assert len(table._memo) <= 4096
    assert table.lookup("gpt-4o") == GPT


def test_invalid_override_names_the_entry() -> None:
    with pytest.raises(AgentCacheUsageError, match=r"cost_table\['bad'\]\.input_per_1k"):
        CostTable({"bad": ModelCost(-1.0, 0.0)})
    with pytest.raises(AgentCacheUsageError, match=r"cost_table\['bad'\]: expected a ModelCost"):
        CostTable(cast(Any, {"bad": (0.1, 0.2)}))


# ─── Cost arithmetic ──────────────────────────────────────────────────────────


def test_cost_is_exact_for_decimal_prices(table: CostTable) -> None:
    # 1234 * 0.0025 / 1000 + 567 * 0.01 / 1000 = 0.003085 + 0.00567
    assert table.cost("gpt-4o", 1234, 567) == 0.008755
    assert table.cost_micros("gpt-4o", 1234, 567) == 8755
    assert table.cost("openai/gpt-4o", 1_000_000, 0) == 2.5
    assert table.cost("gpt-4o", 0, 0) == 0.0
    assert table.cost_micros("gpt-4o", 0, 0) == 0


@pytest.mark.parametrize(
    ("price", "input_tokens", "expected_micros"),
    [
        (ModelCost(0.0025, 0.0), 1, 3),  # 2.5 micros: half rounds up
        (ModelCost(0.0014, 0.0), 1, 1),
        (ModelCost(0.0016, 0.0), 1, 2),
        (ModelCost(0.00015, 0.0), 3, 0),  # 0.45 micros
        (ModelCost(0.00015, 0.0), 4, 1),  # 0.6 micros
    ],
)
def test_cost_micros_rounds_to_the_nearest_microdollar(
    price: ModelCost, input_tokens: int, expected_micros: int
) -> None:
    table = CostTable({"m": price}, use_default=False)
    assert table.cost_micros("m", input_tokens, 0) == expected_micros


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "field"),
    [
        (-1, 10, "input_tokens"),
        (10, -1, "output_tokens"),
        (1.5, 10, "input_tokens"),
        (10, "7", "output_tokens"),
        (True, 10, "input_tokens"),
        (10, None, "output_tokens"),
    ],
)
def test_bad_token_counts_raise_usage_error_naming_the_field(
    table: CostTable, input_tokens: Any, output_tokens: Any, field: str
) -> None:
    for model in ("gpt-4o", "unknown-model"):
        with pytest.raises(AgentCacheUsageError, match=field):
            table.cost(model, input_tokens, output_tokens)
        with pytest.raises(AgentCacheUsageError, match=field):
            table.cost_micros(model, input_tokens, output_tokens)


# ─── scripts/generate_cost_table.py ───────────────────────────────────────────

FIXTURE_PRICES: dict[str, Any] = {
    "sample_spec": {
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "mode": "one of: chat, embedding, completion",
    },
    "zeta-chat": {
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "embedder": {"input_cost_per_token": 1e-07, "output_cost_per_token": 0.0, "mode": "embedding"},
    "alpha/completion": {
        "input_cost_per_token": 1.5e-06,
        "output_cost_per_token": 2e-06,
        "litellm_provider": "alpha",
        "mode": "completion",
    },
    "half-priced": {"input_cost_per_token": 1e-06, "mode": "chat"},
    "mid-responses": {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.2e-05,
        "litellm_provider": "openai",
        "mode": "responses",
    },
    "text-price": {"input_cost_per_token": "0.1", "output_cost_per_token": 0.1, "mode": "chat"},
    "bool-price": {"input_cost_per_token": True, "output_cost_per_token": 0.1, "mode": "chat"},
    "negative": {"input_cost_per_token": -1e-06, "output_cost_per_token": 0.1, "mode": "chat"},
    "no-mode": {"input_cost_per_token": 1e-07, "output_cost_per_token": 4e-07},
    "free-chat": {
        "input_cost_per_token": 0,
        "output_cost_per_token": 0,
        "litellm_provider": "ollama",
        "mode": "chat",
    },
}

EXPECTED_TABLE = """\
{
  "_generated": "Generated by scripts/generate_cost_table.py from LiteLLM 9.9.9 \
model_prices_and_context_window.json; do not edit by hand. Regenerate: python scripts/generate_cost_table.py",
  "source_version": "9.9.9",
  "models": {
    "alpha/completion": [0.0015, 0.002, "alpha"],
    "free-chat": [0.0, 0.0, "ollama"],
    "mid-responses": [0.003, 0.012, "openai"],
    "no-mode": [0.0001, 0.0004, ""],
    "zeta-chat": [0.0025, 0.01, "openai"]
  }
}
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(json.dumps(FIXTURE_PRICES), encoding="utf-8")
    return path


def test_generator_writes_the_expected_table_from_a_local_source(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "cost_table.json"
    result = run_script("--source", str(source), "--version", "9.9.9", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert output.read_text(encoding="utf-8") == EXPECTED_TABLE


def test_generator_output_does_not_depend_on_source_order(source: Path, tmp_path: Path) -> None:
    reversed_source = tmp_path / "reversed.json"
    reversed_source.write_text(json.dumps(dict(reversed(FIXTURE_PRICES.items()))), encoding="utf-8")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert run_script("--source", str(source), "--version", "9.9.9", "--output", str(first)).returncode == 0
    assert run_script("--source", str(reversed_source), "--version", "9.9.9", "--output", str(second)).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_generator_check_passes_on_a_fresh_table_and_fails_on_a_stale_one(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "cost_table.json"
    common = ("--source", str(source), "--version", "9.9.9", "--output", str(output))
    assert run_script(*common).returncode == 0

    fresh = run_script(*common, "--check")
    assert fresh.returncode == 0, fresh.stderr

    output.write_text(EXPECTED_TABLE.replace("0.0025", "0.0026"), encoding="utf-8")
    stale = run_script(*common, "--check")
    assert stale.returncode == 1
    assert "python scripts/generate_cost_table.py" in stale.stderr
    assert "0.0026" in output.read_text(encoding="utf-8"), "--check must not rewrite the file"

    output.unlink()
    assert run_script(*common, "--check").returncode == 1


def test_generator_rejects_a_source_that_is_not_a_price_list(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]", encoding="utf-8")
    result = run_script("--source", str(bad), "--output", str(tmp_path / "out.json"))
    assert result.returncode == 2
    assert "not a JSON object" in result.stderr
    assert not (tmp_path / "out.json").exists()
