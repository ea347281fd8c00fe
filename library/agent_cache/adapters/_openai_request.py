"""Chat Completions requests as cache params: messages become content blocks, binary parts go through the normalizer.

What the key holds is described in :mod:`agent_cache.adapters.openai`; this module builds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_cache.normalizer import BinaryNormalizer, default_normalizer
from agent_cache.types import LlmCacheParams

from ._blocks import binary_block, extras, is_omitted, parse_arguments, passthrough_params, plain


@dataclass
class OpenAIPrepareOptions:
    normalizer: BinaryNormalizer = default_normalizer


async def prepare_params(params: Mapping[str, Any], opts: OpenAIPrepareOptions | None = None) -> LlmCacheParams:
    """Cache params for a ``chat.completions.create`` request (async: the normalizer may fetch)."""
    normalizer = (opts or OpenAIPrepareOptions()).normalizer
    result = passthrough_params(params, ("messages", "stop"))
    stop = params.get("stop")
    if isinstance(stop, str):
        result["stop"] = [stop]  # one stop string and a list of it are the same request
    elif stop is not None and not is_omitted(stop):
        result["stop"] = plain(stop)
    result["messages"] = [await _message(plain(m), normalizer) for m in params.get("messages") or ()]
    return result


async def _message(message: Mapping[str, Any], normalizer: BinaryNormalizer) -> dict[str, Any]:
    role = message.get("role")
    out: dict[str, Any] = {"role": role}
    content = message.get("content")
    blocks: list[Any] = [] if content is None else await _content(content, normalizer)
    known: tuple[str, ...] = ("role", "content")
    if role == "assistant":
        # "" and None say the same; SDK messages echoed back carry None where dicts often carry "".
        blocks = [b for b in blocks if not (b.get("type") == "text" and b.get("text") == "" and len(b) == 2)]
        blocks.extend(_tool_call(call) for call in message.get("tool_calls") or ())
        known = ("role", "content", "tool_calls")
    elif role == "tool":
        out["toolCallId"] = message.get("tool_call_id")
        known = ("role", "content", "tool_call_id")
    if content is not None or blocks:
        out["content"] = blocks
    out.update(extras(message, known))
    return out


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    if call.get("type", "function") != "function":
        return dict(call)  # custom tools and future kinds: verbatim
    function = call.get("function") or {}
    block = {
        "type": "tool_call",
        "id": call.get("id", ""),
        "name": function.get("name", ""),
        "args": parse_arguments(function.get("arguments", "")),
    }
    block.update(extras(call, ("id", "type", "function")))
    block.update(extras(function, ("name", "arguments")))
    return block


async def _content(content: Any, normalizer: BinaryNormalizer) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[Any] = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
            continue
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", ""), **extras(part, ("type", "text"))})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            image = {"url": image} if isinstance(image, str) else image
            rest = {**extras(image, ("url",)), **extras(part, ("type", "image_url"))}
            blocks.append(await binary_block("image", normalizer, url=image.get("url", ""), **rest))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            audio_format = audio.get("format")
            blocks.append(
                await binary_block(
                    "audio",
                    normalizer,
                    base64_data=audio.get("data", ""),
                    media_type=f"audio/{audio_format}" if audio_format else None,
                )
            )
        elif kind == "file":
            blocks.append(await _file(part.get("file") or {}, normalizer))
        else:
            blocks.append(plain(part))  # refusal parts and future kinds: verbatim
    return blocks


async def _file(file: Mapping[str, Any], normalizer: BinaryNormalizer) -> Any:
    rest = extras(file, ("file_id", "file_data"))
    if file.get("file_id"):
        return await binary_block("document", normalizer, file_id=file["file_id"], provider="openai", **rest)
    if file.get("file_data"):
        return await binary_block("document", normalizer, base64_data=file["file_data"], **rest)
    return {"type": "file", **rest}
