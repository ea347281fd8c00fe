"""How the LangGraph saver spells what it stores, and reads it back.

Key segments and ordered-set members (``c:``, ``b:``, ``w:`` prefixes: the layout is in ``_checkpoint_scripts``),
the checkpoint envelope and pending-write entries the scripts store as JSON, values packed as the serde's
``kind:base64`` text, and a script's record decoded into a ``CheckpointTuple``. Nothing here touches Valkey; the
public face is :mod:`agent_cache.adapters.langgraph`, which guards the LangGraph import.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from agent_cache._backend import as_text
from agent_cache._errors import AgentCacheUsageError
from agent_cache._keys import decode_segment, encode_segment


def segment(value: Any, what: str) -> str:
    return encode_segment(str(value), what)


def ns_segment(checkpoint_ns: str) -> str:
    """The root namespace ("") is the empty segment; segments never contain ':', so that is unambiguous."""
    return encode_segment(checkpoint_ns, "checkpoint_ns") if checkpoint_ns else ""


def pack(typed: tuple[str, bytes]) -> str:
    kind, data = typed
    return f"{kind}:{base64.b64encode(data).decode('ascii')}"


def unpack(serde: SerializerProtocol, text: bytes | str) -> Any:
    kind, _, data = as_text(text).partition(":")
    return serde.loads_typed((kind, base64.b64decode(data)))


def checkpoint_config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}}


def configurable(config: RunnableConfig | None, what: str) -> dict[str, Any]:
    conf = (config or {}).get("configurable") or {}
    if conf.get("thread_id") in (None, ""):
        raise AgentCacheUsageError(f"{what} needs config['configurable']['thread_id']")
    return dict(conf)


def matches(metadata: Any, filter: dict[str, Any] | None) -> bool:
    return not filter or all(metadata.get(key) == value for key, value in filter.items())


def list_bounds(checkpoint_ns: str | None, only_id: str | None, before_id: str | None) -> tuple[str, str]:
    """The ordered set's lex range (low, high) holding the checkpoints ``list`` may return: every namespace's
    without ``checkpoint_ns``, else that namespace's, narrowed to one checkpoint or to those before one."""
    low, high = "[c:", "(c;"
    if checkpoint_ns is not None:
        ns = ns_segment(checkpoint_ns)
        low, high = f"[c:{ns}:", f"(c:{ns};"
        if only_id:
            low = high = f"[c:{ns}:{segment(only_id, 'checkpoint_id')}"
        elif before_id:
            high = f"(c:{ns}:{segment(before_id, 'checkpoint_id')}"
    return low, high


def put_args(
    serde: SerializerProtocol,
    conf: dict[str, Any],
    checkpoint: Checkpoint,
    stored_metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
    ttl: int | None,
) -> list[str | int]:
    """The put script's arguments: TTL, the checkpoint's member, its envelope, its run, then (key, value) per
    channel value new in this checkpoint."""
    ns = ns_segment(conf.get("checkpoint_ns", ""))
    body: dict[str, Any] = dict(checkpoint)
    values = body.pop("channel_values")
    run_id = stored_metadata.get("run_id")
    run = segment(run_id, "run id") if run_id else ""
    envelope = {
        "parent": conf.get("checkpoint_id"),
        "run": run or None,
        "blobs": [
            f"b:{ns}:{segment(ch, 'channel')}:{segment(v, 'version')}"
            for ch, v in checkpoint["channel_versions"].items()
        ],
        "checkpoint": pack(serde.dumps_typed(body)),
        "metadata": pack(serde.dumps_typed(stored_metadata)),
    }
    args: list[str | int] = [
        ttl or "",
        f"{ns}:{segment(checkpoint['id'], 'checkpoint_id')}",
        json.dumps(envelope, separators=(",", ":")),
        run,
    ]
    for channel, version in new_versions.items():
        if channel in values:
            args.append(f"b:{ns}:{segment(channel, 'channel')}:{segment(version, 'version')}")
            args.append(pack(serde.dumps_typed(values[channel])))
    return args


def write_args(
    serde: SerializerProtocol,
    conf: dict[str, Any],
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
    ttl: int | None,
) -> list[str | int]:
    """The put_writes script's arguments: TTL, then (member, entry, overwrite flag) per write. The special channels
    (errors, interrupts...) have negative indexes, and their latest value wins."""
    prefix = (
        f"w:{ns_segment(conf.get('checkpoint_ns', ''))}:{segment(conf['checkpoint_id'], 'checkpoint_id')}:"
        f"{segment(task_id, 'task id')}:"
    )
    args: list[str | int] = [ttl or ""]
    for position, (channel, value) in enumerate(writes):
        idx = WRITES_IDX_MAP.get(channel, position)
        entry = {
            "task": task_id,
            "channel": channel,
            "path": task_path,
            "idx": idx,
            "value": pack(serde.dumps_typed(value)),
        }
        args += [f"{prefix}{idx}", json.dumps(entry, separators=(",", ":")), "1" if idx < 0 else "0"]
    return args


def checkpoint_tuple(serde: SerializerProtocol, thread_id: str, record: Sequence[Any]) -> CheckpointTuple:
    """A get or list script's record (member suffix, envelope, channel values, writes) as LangGraph's tuple."""
    suffix, raw_envelope, blobs, writes = record
    ns = as_text(suffix).partition(":")[0]
    checkpoint_ns = decode_segment(ns)
    envelope = json.loads(as_text(raw_envelope))
    checkpoint: Checkpoint = unpack(serde, envelope["checkpoint"])
    values = {}
    for i in range(0, len(blobs), 2):
        channel = as_text(blobs[i]).split(":")[2]
        values[decode_segment(channel)] = unpack(serde, blobs[i + 1])
    checkpoint["channel_values"] = values
    entries = [json.loads(as_text(raw)) for raw in writes]
    entries.sort(key=lambda w: (w["path"], w["task"], w["idx"]))  # langgraph's writes_sort_key
    parent = envelope.get("parent")
    return CheckpointTuple(
        config=checkpoint_config(thread_id, checkpoint_ns, checkpoint["id"]),
        checkpoint=checkpoint,
        metadata=unpack(serde, envelope["metadata"]),
        parent_config=checkpoint_config(thread_id, checkpoint_ns, parent) if parent else None,
        pending_writes=[(w["task"], w["channel"], unpack(serde, w["value"])) for w in entries],
    )
