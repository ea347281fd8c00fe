"""The LLM tier's model policies in Valkey: written by ``set_model_policy``, re-read by every instance.

Stored like tool policies (see ``tiers.tool``): the ``{name}:__model_policies`` hash holds the application's
policies and the live config's (mirrored by ``config.apply_config`` with ``_scripts.MIRROR_TOOL_POLICIES``, which
keeps the application's policy of a pattern the config names aside and puts it back when the config stops naming
it). The live config's policies also come with the config itself, so they win even before the hash is re-read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from .._errors import AgentCacheUsageError, BackendError
from .._scripts import SET_TOOL_POLICY
from ._context import TierContext
from ._model_policy import (
    ModelPolicy,
    ModelPolicyTable,
    model_policies_key,
    model_policy_document,
    owned_model_policies_key,
    parse_stored,
    validate_pattern,
)
from ._policy_hash import parse_policy_hash


class ModelPolicies:
    def __init__(self, context: TierContext) -> None:
        self._ctx = context
        self._own: dict[str, ModelPolicy] = {}  # from the hash (set_model_policy, other instances)
        self._live: Mapping[str, ModelPolicy] = {}  # from the live config: the platform's, they win per pattern
        self._writes = 0  # bumped by set so a concurrent refresh can't undo it
        self.loaded = False  # the hash has been read since start
        self.table = ModelPolicyTable({}, {})

    def _rebuild(self) -> None:
        self.table = ModelPolicyTable(self._own, self._live)

    def for_model(self, model: Any) -> ModelPolicy | None:
        table = self.table
        if not table or not isinstance(model, str):
            return None
        return table.for_model(model)

    async def set(self, pattern: str, policy: ModelPolicy) -> None:
        validate_pattern(pattern)
        if not isinstance(policy, ModelPolicy):
            raise AgentCacheUsageError(f"policy must be a ModelPolicy, got {type(policy).__name__}")
        ctx = self._ctx
        keys = (model_policies_key(ctx.keys), owned_model_policies_key(ctx.keys))
        await ctx.backend.run_script(SET_TOOL_POLICY, keys, (pattern, json.dumps(model_policy_document(policy))))
        self._own[pattern] = policy
        self._writes += 1
        self._rebuild()

    def use_live(self, policies: Mapping[str, ModelPolicy]) -> None:
        self._live = dict(policies)
        self._rebuild()

    async def load_first(self) -> None:
        """Read the hash before the tier's first decision about a model (see ``ToolCache._load_policies_first``):
        an outage is the calling operation's to report, a malformed policy upkeep's."""
        with contextlib.suppress(BackendError, AgentCacheUsageError):
            await self.refresh()

    async def refresh(self) -> None:
        """Re-read every policy; a malformed one keeps its previous value (and raises after the rest apply)."""
        writes_before = self._writes
        raw = await self._ctx.backend.command("HGETALL", model_policies_key(self._ctx.keys))
        if self._writes != writes_before:
            return  # a local set raced this read; the next refresh sees both
        self._own, problems = parse_policy_hash(raw, parse_stored, self._own)
        self._rebuild()
        self.loaded = True
        if problems:
            raise AgentCacheUsageError("; ".join(problems))
