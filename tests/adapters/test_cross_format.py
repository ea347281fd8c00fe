"""One entry, several adapters: a plain conversation keys alike in Chat Completions, the Responses API, Anthropic
Messages and LlamaIndex, so each reads the entries of the others. Only the writer's format restores its ids; the
provider-neutral stop reason is honoured by everyone, and an answer another provider cannot express is a miss.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from agent_cache import AgentCache
from agent_cache._errors import AgentCacheUsageError
from agent_cache._keys import llm_hash
from agent_cache.adapters import anthropic, llamaindex, openai, openai_responses
from tests.adapters.conftest import ProviderServer
from tests.adapters.wire import anthropic_message, chat_completion, message_item, response_body

pytestmark = pytest.mark.valkey

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def oai(provider: ProviderServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def claude(provider: ProviderServer) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(base_url=provider.url, api_key="test", max_retries=0) as sdk:
        yield sdk


async def test_the_formats_share_entries() -> None:
    chat = await openai.prepare_params({"model": "m", "max_tokens": 5, "messages": HI})
    assert llm_hash(chat) == llm_hash(await anthropic.prepare_params({"model": "m", "max_tokens": 5, "messages": HI}))
    plain_chat = await openai.prepare_params({"model": "m", "messages": HI})
    assert llm_hash(plain_chat) == llm_hash(await openai_responses.prepare_params({"model": "m", "input": "hi"}))


async def test_a_truncated_chat_answer_stays_truncated_in_every_format(
    cache: AgentCache, oai: AsyncOpenAI, claude: AsyncAnthropic, provider: ProviderServer
) -> None:
    provider.reply_json(chat_completion(content="Hel", finish_reason="length"))
    await openai.cached_create(cache, oai.chat.completions.create, model="m", max_tokens=5, messages=HI)
    message = await anthropic.cached_create(cache, claude.messages.create, model="m", max_tokens=5, messages=HI)
    assert provider.calls() == 1
    assert message.stop_reason == "max_tokens" and message.content[0].text == "Hel"  # type: ignore[union-attr]
    assert message.id != "chatcmpl-original" and message.model == "m"  # ids and names belong to the writer's format

    provider.reply_json(chat_completion(content="Hel", finish_reason="length"))
    await openai.cached_create(cache, oai.chat.completions.create, model="m", messages=HI)
    response = await openai_responses.cached_create(cache, oai.responses.create, model="m", input="hi")
    assert provider.calls() == 2
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hel"


async def test_an_answer_another_provider_cannot_express_is_a_miss(
    cache: AgentCache, oai: AsyncOpenAI, claude: AsyncAnthropic, provider: ProviderServer
) -> None:
    refusal = anthropic_message([{"type": "text", "text": "I can", "citations": None}], stop_reason="refusal")
    provider.reply_json(refusal)
    await anthropic.cached_create(cache, claude.messages.create, model="m", max_tokens=5, messages=HI)
    provider.reply_json(chat_completion(content="Hello!"))
    completion = await openai.cached_create(cache, oai.chat.completions.create, model="m", max_tokens=5, messages=HI)
    assert provider.calls() == 2  # Chat Completions has no such refusal: the provider was asked
    assert completion.choices[0].message.content == "Hello!"


async def test_complete_answers_of_another_format_rebuild_with_derived_ids(
    cache: AgentCache, oai: AsyncOpenAI, provider: ProviderServer
) -> None:
    provider.reply_json(response_body([message_item("Hello!")]))
    await openai_responses.cached_create(cache, oai.responses.create, model="m", input="hi")
    completion = await openai.cached_create(cache, oai.chat.completions.create, model="m", messages=HI)
    assert provider.calls() == 1
    assert completion.choices[0].message.content == "Hello!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.id.startswith("chatcmpl-") and completion.model == "m"
    hit = await cache.llm.check(await openai.prepare_params({"model": "m", "messages": HI}))
    assert hit.content_blocks is not None
    assert llamaindex.from_blocks(hit.content_blocks, hit.metadata).message.content == "Hello!"


def test_stop_reasons_translate_between_formats() -> None:
    stopped = anthropic.to_answer(
        anthropic_message([{"type": "text", "text": "Step 1"}], stop_reason="stop_sequence", stop_sequence="###")
    )
    assert stopped.metadata is not None and stopped.metadata["finish"] == "stop_sequence"
    completion = openai.from_blocks(stopped.blocks, {"model": "m"}, metadata=stopped.metadata)
    assert completion.choices[0].finish_reason == "stop"  # how Chat Completions reports a stop sequence
    with pytest.raises(AgentCacheUsageError):
        openai_responses.from_blocks(stopped.blocks, {"model": "m"}, metadata=stopped.metadata)

    refused = openai.to_answer(chat_completion(content=None, refusal="No."))
    assert refused.metadata is not None and refused.metadata["finish"] == "refusal"
    with pytest.raises(AgentCacheUsageError):
        anthropic.from_blocks(refused.blocks, {"model": "m"}, metadata=refused.metadata)
    with pytest.raises(AgentCacheUsageError):
        openai_responses.from_blocks(refused.blocks, {"model": "m"}, metadata=refused.metadata)
