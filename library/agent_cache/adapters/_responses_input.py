"""Responses API input items as canonical messages for the cache key.

A string is one user text part; messages, function calls and their outputs, and reasoning items become messages of
content blocks, without the server-assigned ids and statuses, so an output item echoed back keys like the same item
written as a dict. Images, files and audio go through the binary normalizer; other items are kept verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_cache.normalizer import BinaryNormalizer

from ._blocks import binary_block, extras, parse_arguments, plain

_ITEM_VOLATILE = ("id", "status")  # server-assigned, not what the model reads


async def normalize_input(items: Any, normalizer: BinaryNormalizer) -> list[dict[str, Any]]:
    """``input`` (a string or a list of items, dicts or SDK objects) as canonical messages for the key."""
    if isinstance(items, str):
        return [{"role": "user", "content": [{"type": "text", "text": items}]}]
    return [await _item(plain(item), normalizer) for item in items or ()]


async def _item(item: Mapping[str, Any], normalizer: BinaryNormalizer) -> dict[str, Any]:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        content = item.get("content")
        blocks = [] if content is None else await _parts(content, normalizer)
        return {
            "role": item.get("role"),
            "content": blocks,
            **extras(item, ("type", "role", "content", *_ITEM_VOLATILE)),
        }
    if kind == "function_call":
        call = {
            "type": "tool_call",
            "id": item.get("call_id", ""),
            "name": item.get("name", ""),
            "args": parse_arguments(item.get("arguments", "")),
            **extras(item, ("type", "call_id", "name", "arguments", *_ITEM_VOLATILE)),
        }
        return {"role": "assistant", "content": [call]}
    if kind == "function_call_output":
        output = item.get("output")
        blocks = await _parts(output if output is not None else "", normalizer)
        rest = extras(item, ("type", "call_id", "output", *_ITEM_VOLATILE))
        return {"role": "tool", "toolCallId": item.get("call_id", ""), "content": blocks, **rest}
    if kind == "reasoning":
        summary = [s.get("text", "") for s in item.get("summary") or ()] or [""]
        blocks = [{"type": "reasoning", "text": text} for text in summary]
        if item.get("encrypted_content"):
            blocks[0]["opaqueSignature"] = item["encrypted_content"]
        blocks[0].update(extras(item, ("type", "summary", "encrypted_content", *_ITEM_VOLATILE)))
        return {"role": "assistant", "content": blocks}
    return dict(item)  # item references, hosted-tool calls and future kinds: verbatim


async def _parts(content: Any, normalizer: BinaryNormalizer) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[Any] = []
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            blocks.append({"type": "text", "text": part.get("text", ""), **extras(part, ("type", "text"))})
        elif kind == "input_image":
            rest = extras(part, ("type", "image_url", "file_id"))
            if part.get("file_id"):
                blocks.append(
                    await binary_block("image", normalizer, file_id=part["file_id"], provider="openai", **rest)
                )
            else:
                blocks.append(await binary_block("image", normalizer, url=part.get("image_url") or "", **rest))
        elif kind == "input_file":
            rest = extras(part, ("type", "file_id", "file_data", "file_url"))
            if part.get("file_id"):
                block = await binary_block("document", normalizer, file_id=part["file_id"], provider="openai", **rest)
            elif part.get("file_data"):
                block = await binary_block("document", normalizer, base64_data=part["file_data"], **rest)
            elif part.get("file_url"):
                block = await binary_block("document", normalizer, url=part["file_url"], **rest)
            else:
                block = plain(part)
            blocks.append(block)
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            audio_format = audio.get("format")
            media_type = f"audio/{audio_format}" if audio_format else None
            blocks.append(
                await binary_block("audio", normalizer, base64_data=audio.get("data", ""), media_type=media_type)
            )
        else:
            blocks.append(plain(part))
    return blocks
