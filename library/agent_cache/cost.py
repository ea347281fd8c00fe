"""Model prices: the bundled default table and the lookup rules that map a model name to a price.

Why this exists: a cache hit saves the price of the LLM call it replaced, and callers name models the way
their SDK or gateway does (``openai/gpt-4o``, ``bedrock/anthropic.claude-...``,
``claude-sonnet-4-5-20250929``), not the way a price list does. The rules below turn those spellings into a
price without the caller having to list every alias, and stay predictable enough that a wrong price can be
explained.

The default table is ``cost_table.json``, generated from LiteLLM's price list by
``scripts/generate_cost_table.py`` (see that script for the file format). It is parsed on first use, not when
``agent_cache`` is imported.

Lookup rules of :meth:`CostTable.lookup`. From the requested name, a list of candidate names is built:

1. **Exact**: the name as given.
2. **Provider prefixes**: while the first ``/``-separated segment is a known provider, drop it and add the
   rest (``openrouter/openai/gpt-4o`` → ``openai/gpt-4o`` → ``gpt-4o``). Stripping stops at the first
   segment that is not a provider. Known providers (compared case-insensitively) are
   :data:`PROVIDER_PREFIXES` plus, when the defaults are in use, every ``litellm_provider`` value and every
   first segment of a ``/``-separated name in the default table.
3. **Date/version suffixes**: for each name from steps 1–2, most specific first, repeatedly drop one
   trailing suffix and add the result: a Vertex tag ``@...`` (``@20241022``, ``@001``, ``@default``), a
   Bedrock version ``-v<N>:<M>``, a date ``-YYYYMMDD`` or ``-YYYY-MM-DD``, or ``-latest``
   (``anthropic.claude-sonnet-4-5-20250929-v1:0`` → ``...-20250929`` → ``anthropic.claude-sonnet-4-5``).
4. **Case-insensitive**: the same candidates, compared to the table's names ignoring case (when two table
   names differ only by case, the first in sorted order wins).

The first candidate found wins. Overrides are searched with all four steps before the defaults are searched
at all, so an override always beats the bundled table: an override for ``gpt-4o`` prices ``openai/gpt-4o``
and ``azure/gpt-4o`` even though the default table has its own ``azure/gpt-4o``. Results, misses included,
are memoized per :class:`CostTable` in a bounded dict.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from decimal import ROUND_HALF_UP, Decimal
from importlib.resources import files
from typing import Final

from agent_cache._errors import AgentCacheUsageError, ConfigurationError
from agent_cache.types import ModelCost

__all__ = ["DEFAULT_COST_TABLE", "PROVIDER_PREFIXES", "CostTable"]

PROVIDER_PREFIXES: Final = frozenset(
    {
        "openai",
        "anthropic",
        "azure",
        "azure_ai",
        "bedrock",
        "converse",
        "invoke",
        "vertex_ai",
        "gemini",
        "google",
        "openrouter",
        "together_ai",
        "fireworks_ai",
        "groq",
        "mistral",
        "deepseek",
        "xai",
        "ollama",
        "litellm_proxy",
    }
)
"""Leading segments stripped even when the default table is disabled (``converse``/``invoke`` are the
Bedrock API routes LiteLLM accepts after ``bedrock/``)."""

_SUFFIXES: Final = (
    re.compile(r"@[^@/]*$"),
    re.compile(r"-v\d+:\d+$"),
    re.compile(r"-\d{8}$"),
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),
    re.compile(r"-latest$", re.IGNORECASE),
)
_MEMO_SIZE: Final = 4096
_MICROS_PER_DOLLAR: Final = Decimal(1_000_000)
_TABLE_FILE: Final = "cost_table.json"


class _DefaultCostTable(Mapping[str, ModelCost]):
    """Read-only view of ``cost_table.json`` that parses the file on first access."""

    def __init__(self) -> None:
        self._models: dict[str, ModelCost] | None = None
        self._providers: frozenset[str] = frozenset()
        self._version = ""
        self._lowered: dict[str, str] | None = None

    def _load(self) -> dict[str, ModelCost]:
        if self._models is None:
            text = files("agent_cache").joinpath(_TABLE_FILE).read_text(encoding="utf-8")
            self._models, self._providers, self._version = _parse_table(text)
        return self._models

    def __getitem__(self, model: str) -> ModelCost:
        return self._load()[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, model: object) -> bool:
        return model in self._load()

    @property
    def providers(self) -> frozenset[str]:
        """Lower-cased provider names and first name segments found in the table."""
        self._load()
        return self._providers

    @property
    def lowered(self) -> Mapping[str, str]:
        """Lower-cased name → table name, for the case-insensitive rule; built on first use."""
        if self._lowered is None:
            self._lowered = _lowered_index(self._load())
        return self._lowered

    @property
    def source_version(self) -> str:
        """The LiteLLM release the table was generated from."""
        self._load()
        return self._version

    def __repr__(self) -> str:
        loaded = f"{len(self._models)} models" if self._models is not None else "not loaded yet"
        return f"<DEFAULT_COST_TABLE {loaded}>"


def _parse_table(text: str) -> tuple[dict[str, ModelCost], frozenset[str], str]:
    try:
        document = json.loads(text)
        rows = document["models"]
        models = {str(name): ModelCost(float(row[0]), float(row[1])) for name, row in rows.items()}
        providers = {str(row[2]).lower() for row in rows.values() if len(row) > 2 and row[2]}
        version = str(document.get("source_version", ""))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ConfigurationError(
            f"agent_cache/{_TABLE_FILE} is malformed ({exc!r}); regenerate it: python scripts/generate_cost_table.py"
        ) from exc
    providers.update(name.split("/", 1)[0].lower() for name in models if "/" in name)
    return models, frozenset(providers), version


DEFAULT_COST_TABLE: Final = _DefaultCostTable()
"""The bundled LiteLLM-derived prices, by exact model name (use :class:`CostTable` for alias resolution)."""


class CostTable:
    """Prices models by name: ``overrides`` first, then (unless ``use_default=False``) the bundled table."""

    def __init__(self, overrides: Mapping[str, ModelCost] | None = None, *, use_default: bool = True) -> None:
        self._overrides: dict[str, ModelCost] = {}
        for name, price in (overrides or {}).items():
            _check_price(name, price)
            self._overrides[name] = price
        self._use_default = use_default
        self._overrides_lowered = _lowered_index(self._overrides)
        self._memo: dict[str, ModelCost | None] = {}

    @property
    def overrides(self) -> Mapping[str, ModelCost]:
        return dict(self._overrides)

    @property
    def use_default(self) -> bool:
        return self._use_default

    def lookup(self, model: str) -> ModelCost | None:
        """The price of ``model`` by the rules in this module's docstring, or None if no rule finds one."""
        if not isinstance(model, str):
            raise AgentCacheUsageError(f"model: expected a model name string, got {type(model).__name__}")
        if model in self._memo:
            return self._memo[model]
        price = self._resolve(model)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.pop(next(iter(self._memo)), None)
        self._memo[model] = price
        return price

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Dollars that ``input_tokens`` + ``output_tokens`` of ``model`` cost; None if it has no price."""
        exact = self._exact_cost(model, input_tokens, output_tokens)
        return None if exact is None else float(exact)

    def cost_micros(self, model: str, input_tokens: int, output_tokens: int) -> int | None:
        """:meth:`cost` in integer microdollars, rounded half up (the unit the stats counters add up)."""
        exact = self._exact_cost(model, input_tokens, output_tokens)
        if exact is None:
            return None
        return int((exact * _MICROS_PER_DOLLAR).to_integral_value(rounding=ROUND_HALF_UP))

    def _exact_cost(self, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
        # Prices are decimal literals in the table; Decimal keeps 1234 tokens at $0.0025/1k exactly $0.003085.
        _check_tokens("input_tokens", input_tokens)
        _check_tokens("output_tokens", output_tokens)
        price = self.lookup(model)
        if price is None:
            return None
        total = input_tokens * _decimal(price.input_per_1k) + output_tokens * _decimal(price.output_per_1k)
        return total / 1000

    def _resolve(self, model: str) -> ModelCost | None:
        prefixes = PROVIDER_PREFIXES | DEFAULT_COST_TABLE.providers if self._use_default else PROVIDER_PREFIXES
        candidates = _candidates(model, prefixes)
        price = _find(candidates, self._overrides, self._overrides_lowered)
        if price is None and self._use_default:
            price = _find(candidates, DEFAULT_COST_TABLE, DEFAULT_COST_TABLE.lowered)
        return price

    def __repr__(self) -> str:
        return f"CostTable({len(self._overrides)} overrides, use_default={self._use_default})"


def _find(candidates: list[str], table: Mapping[str, ModelCost], lowered: Mapping[str, str]) -> ModelCost | None:
    """Rules 1-3 by exact name, then rule 4 by lower-cased name, in one table."""
    for name in candidates:
        if name in table:
            return table[name]
    for name in candidates:
        original = lowered.get(name.lower())
        if original is not None:
            return table[original]
    return None


def _lowered_index(table: Mapping[str, ModelCost]) -> dict[str, str]:
    index: dict[str, str] = {}
    for name in sorted(table):
        index.setdefault(name.lower(), name)
    return index


def _candidates(model: str, prefixes: frozenset[str]) -> list[str]:
    """Names to try for ``model``, in rule order (exact, prefix-stripped, suffix-stripped)."""
    stripped = [model]
    head, sep, rest = model.partition("/")
    while sep and rest and head.lower() in prefixes:
        stripped.append(rest)
        head, sep, rest = rest.partition("/")
    candidates = list(stripped)
    for name in stripped:
        while True:
            shorter = _strip_suffix(name)
            if shorter is None:
                break
            candidates.append(shorter)
            name = shorter
    return list(dict.fromkeys(candidates))


def _strip_suffix(name: str) -> str | None:
    for pattern in _SUFFIXES:
        shorter = pattern.sub("", name, count=1)
        if shorter != name and shorter and not shorter.endswith("/"):
            return shorter
    return None


def _decimal(value: float) -> Decimal:
    # repr() is the shortest string that round-trips, i.e. the literal written in cost_table.json.
    return Decimal(repr(value))


def _check_tokens(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AgentCacheUsageError(f"{field}: expected a non-negative integer token count, got {value!r}")


def _check_price(name: str, price: object) -> None:
    if not isinstance(price, ModelCost):
        raise AgentCacheUsageError(f"cost_table[{name!r}]: expected a ModelCost, got {type(price).__name__}")
    for field in ("input_per_1k", "output_per_1k"):
        value = getattr(price, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise AgentCacheUsageError(
                f"cost_table[{name!r}].{field}: expected a non-negative number of dollars, got {value!r}"
            )
