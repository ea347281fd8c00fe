"""How the high-level wrappers talk to the LLM tier, and what they share about responses.

Valkey trouble is the tier's business: by default a failed lookup is a miss and a failed store is skipped (the
cache's ``on_error`` policy), so a wrapper in front of a paid call never loses the call's answer; with
``on_error="raise"`` the error reaches the caller as the cache was told. A response the wrappers cannot read back
faithfully is returned uncached, never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_cache._errors import AgentCacheUsageError
from agent_cache.types import ContentBlock, LlmCacheResult, LlmStoreOptions

if TYPE_CHECKING:
    from agent_cache.cache import AgentCache

log = logging.getLogger("agent_cache.adapters")


@dataclass(frozen=True)
class Answer:
    """A provider response reduced to what the LLM tier stores."""

    blocks: list[ContentBlock]
    tokens: dict[str, int] | None = None


class UncacheableResponseError(AgentCacheUsageError):
    """The response holds something content blocks cannot carry faithfully, so it is not stored.

    Several choices, a refusal, citations, audio, hosted-tool items, a truncated answer... Storing them would
    make a hit differ from the original; the wrappers return such responses uncached.
    """


async def lookup(cache: AgentCache, params: Mapping[str, Any]) -> LlmCacheResult:
    return await cache.llm.check(params)


async def save(cache: AgentCache, params: Mapping[str, Any], answer: Answer, ttl: int | None) -> str:
    return await cache.llm.store_multipart(params, answer.blocks, LlmStoreOptions(ttl=ttl, tokens=answer.tokens))


def answer_of(extract: Callable[[Any], Answer], response: Any) -> Answer | None:
    """``extract(response)``, or None when the response is not to be stored.

    A response the blocks cannot carry is expected (logged at debug level); any other failure is a bug in the
    adapter or an unexpected response shape, logged as a warning — either way the caller still gets its response.
    """
    try:
        return extract(response)
    except UncacheableResponseError as exc:
        log.debug("agent-cache: response not stored: %s", exc)
    except Exception:
        log.warning("agent-cache: could not read the response to store it; returned uncached", exc_info=True)
    return None


def tokens(input_tokens: int | None, output_tokens: int | None) -> dict[str, int] | None:
    if input_tokens is None and output_tokens is None:
        return None
    return {"input": int(input_tokens or 0), "output": int(output_tokens or 0)}


def synthetic_id(prefix: str, key: str | None, index: int | None = None, length: int = 24) -> str:
    """A stable id for a rebuilt response: the provider's prefix and the entry's hash.

    Stored entries keep tool-call ids but not response or item ids, so a hit gets an id derived from its
    cache key: the same entry always rebuilds with the same id.
    """
    digest = (key or "").rpartition(":")[2][:length] or "0" * length
    return f"{prefix}{digest}" if index is None else f"{prefix}{digest}_{index}"


def blocks_of(result: LlmCacheResult) -> Sequence[ContentBlock]:
    """The stored blocks, or one text block for an entry stored with plain ``cache.llm.store``."""
    if result.content_blocks is not None:
        return result.content_blocks
    return [{"type": "text", "text": result.response or ""}]
