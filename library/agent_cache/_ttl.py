"""TTL precedence — pure.

LLM:     per call > model policy > config tier TTL > config defaultTTL > code ``tier_defaults`` > code ``default_ttl``
         > none
Tool:    per call > tool policy > (the same chain as LLM)
Session: ``set`` per call > (the same chain); reads slide the TTL to the tier's value (without one, reads
         don't touch the TTL).
A config pushed by the operator overrides code defaults (the platform owns them); a per-call value wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ._errors import AgentCacheUsageError
from .types import Tier, TierDefaults

TIERS: tuple[Tier, ...] = ("llm", "tool", "session")


def validate_ttl(ttl: object, what: str = "ttl") -> int | None:
    """A TTL is a positive whole number of seconds, or None for "not set here"."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise AgentCacheUsageError(f"{what} must be a positive number of seconds, got {ttl!r}")
    if isinstance(ttl, float):
        if not ttl.is_integer():
            raise AgentCacheUsageError(f"{what} must be a whole number of seconds, got {ttl!r}")
        ttl = int(ttl)
    if ttl <= 0:
        raise AgentCacheUsageError(f"{what} must be a positive number of seconds, got {ttl!r}")
    return ttl


def first_set(*candidates: int | None) -> int | None:
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return None


@dataclass
class TtlPolicy:
    """The TTL sources below a per-call value; ``live_tiers`` is replaced whole when a config applies."""

    default_ttl: int | None = None
    code_tiers: dict[str, int | None] = field(default_factory=dict)
    live_tiers: Mapping[str, int | None] = field(default_factory=dict)
    live_default: int | None = None

    @classmethod
    def from_options(cls, default_ttl: int | None, tier_defaults: Mapping[str, TierDefaults]) -> TtlPolicy:
        unknown = set(tier_defaults) - set(TIERS)
        if unknown:
            raise AgentCacheUsageError(
                f"tier_defaults has unknown tier(s) {sorted(unknown)}; valid tiers: {list(TIERS)}"
            )
        return cls(
            default_ttl=validate_ttl(default_ttl, "default_ttl"),
            code_tiers={
                tier: validate_ttl(defaults.ttl, f"tier_defaults[{tier!r}].ttl")
                for tier, defaults in tier_defaults.items()
            },
        )

    def tier_ttl(self, tier: Tier) -> int | None:
        return first_set(self.live_tiers.get(tier), self.live_default, self.code_tiers.get(tier), self.default_ttl)

    def resolve(self, tier: Tier, per_call: int | None, policy: int | None = None) -> int | None:
        return first_set(validate_ttl(per_call), policy, self.tier_ttl(tier))
