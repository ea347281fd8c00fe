"""The OpenAI Responses format, shared by the Responses adapter and the OpenAI Agents SDK wrapper.

Input items become canonical messages for the key; output items become content blocks and back; a stored answer
replays as the Responses API's own stream events. Everything here works on wire-format dicts, and SDK objects are
built the way the SDK builds them from a server's JSON (``construct``: lenient, recursive), so a rebuilt response
is what the client would have parsed.

Blocks map one to one onto output items: consecutive text blocks are the ``output_text`` parts of one message;
a ``function_call`` is a tool-call block (``call_id`` kept); a reasoning item is one reasoning block per summary
part, the first carrying ``encrypted_content`` as ``opaqueSignature``. Output that this mapping cannot carry back
faithfully (hosted tools, citations, refusals, logprobs, message phases, raw reasoning text) is not stored.

The input side is in ``_responses_input``, output items ↔ blocks and the rebuilt ``Response`` in
``_responses_output``, event replay and assembly in ``_responses_stream``; this module gathers them for the
Responses adapter and the Agents SDK wrapper.
"""

from ._responses_input import normalize_input
from ._responses_output import (
    ECHOED,
    FORMAT,
    build_response,
    hit_wire,
    output_answer,
    output_blocks,
    output_items,
    read_output,
    response_wire,
    skeleton_items,
    wire,
)
from ._responses_stream import EventAssembler, replay_events

__all__ = [
    "ECHOED",
    "FORMAT",
    "EventAssembler",
    "build_response",
    "hit_wire",
    "normalize_input",
    "output_answer",
    "output_blocks",
    "output_items",
    "read_output",
    "replay_events",
    "response_wire",
    "skeleton_items",
    "wire",
]
