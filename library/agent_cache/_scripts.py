"""Lua scripts for the indexed tiers (session threads and tools).

Each script touches one data key family and its index, which share a cluster hash tag, so a script runs
on one node in one round trip. Index members are key suffixes (``prefix .. member`` is the data key).
Only commands of Redis 6.2 are used (``PTTL`` rather than ``PEXPIRETIME``, no ``PEXPIRE ... GT``).

Two invariants keep the index exact at O(a thread's fields) without touching it on every read:

- **The index outlives every member.** Its expiry only ever grows (writes and sliding reads push it to
  at least ``now + lifetime``), and an index without expiry keeps none while any member has none. A
  session write sets the lifetime to twice the longest TTL a read may slide a field to, so a process that
  has just seen the index extended can slide fields with a plain ``GETEX`` for half a TTL (see
  ``tiers.session``).
- **A member's score is a lower bound of its entry's expiry** (server milliseconds, ``inf`` without TTL):
  plain ``GETEX`` reads move the entry, not the score. So a score in the past only makes the member a
  candidate: writes check candidates with ``PTTL``, drop those whose entry is gone and re-score the rest.

Time comes from the server (``TIME``), so client clock skew cannot prune live entries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

BY_SHA: dict[str, Script] = {}
"""Every script made, by its SHA1: a pipeline's NOSCRIPT retry (``Backend.pipeline``) needs the source."""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)
    label: str = field(init=False)
    """How errors name it: ``script <name>``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())
        object.__setattr__(self, "label", f"script {self.name}")
        BY_SHA[self.sha] = self


_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Needs `now`. expiry_of: when a key expires (ms), 'inf' without TTL, nil when it is gone.
# outlive: keep the index alive until at least `at` (never shortening it); an index without expiry (or
# just created) gets one only once no member is left without a TTL, at `at` or its furthest member's
# score, whichever is later (a read may have slid a member past its score, but never past `at`).
# Returns true when the index has an expiry afterwards (false too when there is no index: a field whose index
# was evicted stays unindexed, and its reads keep taking the script).
_INDEX_HELPERS = """
local function expiry_of(key)
  local ttl = redis.call('PTTL', key)
  if ttl == -2 then return nil end
  if ttl == -1 then return 'inf' end
  return now + ttl
end

local function outlive(idx, prefix, at)
  local ttl = redis.call('PTTL', idx)
  if ttl == -2 then return false end
  if ttl >= 0 then
    if now + ttl < at then redis.call('PEXPIREAT', idx, at) end
    return true
  end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', idx, '+inf', '+inf')) do
    local expiry = expiry_of(prefix .. member)
    if expiry == 'inf' then return false end
    if expiry then redis.call('ZADD', idx, expiry, member) else redis.call('ZREM', idx, member) end
  end
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  if #top == 0 then return true end
  redis.call('PEXPIREAT', idx, math.max(at, math.floor(tonumber(top[2]))))
  return true
end

local function prune(idx, prefix, limit)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. now, 'LIMIT', 0, limit)) do
    local expiry = expiry_of(prefix .. member)
    if expiry then redis.call('ZADD', idx, expiry, member) else redis.call('ZREM', idx, member) end
  end
end
"""

_HEADER = _NOW_MS + _INDEX_HELPERS

# Expired candidates checked per write: bounded work per call; a backlog drains over later writes.
_PRUNE_LIMIT = 64

# KEYS: data key, index key. ARGV: member, value, ttl seconds ('' for none), index lifetime ms ('' for the
# ttl's own). Returns 1 when the index has an expiry afterwards, 0 when it is kept without one.
SET_INDEXED = Script(
    "set_indexed",
    _HEADER
    + f"""
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
local has_expiry = false
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], 'inf', ARGV[1])
  redis.call('PERSIST', KEYS[2])
else
  local ttl_ms = tonumber(ARGV[3]) * 1000
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl_ms)
  redis.call('ZADD', KEYS[2], now + ttl_ms, ARGV[1])
  local lifetime = ttl_ms
  if ARGV[4] ~= '' then lifetime = tonumber(ARGV[4]) end
  has_expiry = outlive(KEYS[2], prefix, now + lifetime)
end
prune(KEYS[2], prefix, {_PRUNE_LIMIT})
if has_expiry then return 1 end
return 0
""",
)

# KEYS: data key, index key. ARGV: member, ttl seconds, index lifetime ms. A read that slides the entry's
# TTL and makes sure the index outlives it. Returns nil when the entry is missing, else {value, 1 when the
# index has an expiry (0: kept without one)}.
GET_SLIDING = Script(
    "get_sliding",
    """
local value = redis.call('GETEX', KEYS[1], 'EX', ARGV[2])
if not value then return false end
"""
    + _HEADER
    + """
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
if outlive(KEYS[2], prefix, now + tonumber(ARGV[3])) then return {value, 1} end
return {value, 0}
""",
)

# KEYS: index key. ARGV: member (a full key: the LLM entries it lists live in other slots), ttl seconds ('' for
# none). An index of entries no read slides (LLM answers), so scores are exact expiries: it prunes by score and,
# when it has no expiry of its own, fits it to its furthest member; it never shortens one it has.
KEY_INDEX_ADD = Script(
    "key_index_add",
    _NOW_MS
    + """
local score = 'inf'
if ARGV[2] ~= '' then score = now + tonumber(ARGV[2]) * 1000 end
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local ttl = redis.call('PTTL', KEYS[1])
if score == 'inf' then
  if ttl ~= -1 then redis.call('PERSIST', KEYS[1]) end
elseif ttl >= 0 then
  if now + ttl < score then redis.call('PEXPIREAT', KEYS[1], score) end
else
  local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if top[2] ~= 'inf' then redis.call('PEXPIREAT', KEYS[1], math.max(score, math.floor(tonumber(top[2])))) end
end
return 1
""",
)

# KEYS: the registry of models with LLM entries (``llm.clear`` walks their indexes). ARGV: model, ttl seconds
# ('' for none), margin ms. The score only ever grows (ZADD GT): the last moment the model may have a live
# entry, plus a margin for the clocks of the cluster nodes that hold its entries. Pruned by score, and the
# registry expires with its furthest member; order against the entry's own writes does not matter.
MODEL_REGISTRY_ADD = Script(
    "model_registry_add",
    _NOW_MS
    + """
local score = 'inf'
if ARGV[2] ~= '' then score = now + tonumber(ARGV[2]) * 1000 + tonumber(ARGV[3]) end
redis.call('ZADD', KEYS[1], 'GT', score, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] == 'inf' then
  if redis.call('PTTL', KEYS[1]) ~= -1 then redis.call('PERSIST', KEYS[1]) end
else
  redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(top[2])))
end
return 1
""",
)

# Tool policies have two owners: the application (``set_policy``, BetterDB Monitor) and the live config. The
# policies hash shows what applies (the config's policy where it names the tool); the hash of the tools the
# config owns (same slot: its hash tag is the policies key) keeps each one's application policy ('' for none),
# so a config that stops naming a tool gives it back.
#
# KEYS: policies hash, owned-tools hash. ARGV: tool, policy JSON, tool, policy JSON... (the whole config's
# policies). Tools no longer named get their application policy back; newly named ones keep it aside.
MIRROR_TOOL_POLICIES = Script(
    "mirror_tool_policies",
    """
local named = {}
for i = 1, #ARGV, 2 do named[ARGV[i]] = ARGV[i + 1] end
local owned = redis.call('HGETALL', KEYS[2])
for i = 1, #owned, 2 do
  local tool, own = owned[i], owned[i + 1]
  if named[tool] == nil then
    if own == '' then redis.call('HDEL', KEYS[1], tool) else redis.call('HSET', KEYS[1], tool, own) end
    redis.call('HDEL', KEYS[2], tool)
  end
end
for tool, policy in pairs(named) do
  if not redis.call('HGET', KEYS[2], tool) then
    redis.call('HSET', KEYS[2], tool, redis.call('HGET', KEYS[1], tool) or '')
  end
  redis.call('HSET', KEYS[1], tool, policy)
end
return 1
""",
)

# KEYS: policies hash, owned-tools hash. ARGV: tool, policy JSON. The application's policy: in the policies hash,
# or kept aside while the live config owns the tool. Returns 1 when it applies now, 0 when the config's wins.
SET_TOOL_POLICY = Script(
    "set_tool_policy",
    """
if redis.call('HGET', KEYS[2], ARGV[1]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
""",
)

# KEYS: data key, index key. ARGV: member. Returns 1 when the entry existed.
DELETE_INDEXED = Script(
    "delete_indexed",
    """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
""",
)

# KEYS: index keys (one slot). ARGV: batch size, then each index's key prefix. Deletes up to a batch of
# entries and their index members, taking the indexes in order (a thread's fields, then its checkpoints).
# Returns {deleted, remaining}; callers repeat until remaining is 0, so no call blocks the server for long.
DROP_INDEXED_BATCH = Script(
    "drop_indexed_batch",
    """
local budget = tonumber(ARGV[1])
local deleted = 0
local remaining = 0
for i, index in ipairs(KEYS) do
  if budget > 0 then
    local members = redis.call('ZRANGE', index, 0, budget - 1)
    for _, member in ipairs(members) do
      deleted = deleted + redis.call('DEL', ARGV[i + 1] .. member)
    end
    if #members > 0 then redis.call('ZREM', index, unpack(members)) end
    budget = budget - #members
  end
  remaining = remaining + redis.call('ZCARD', index)
end
return {deleted, remaining}
""",
)

# KEYS: index key. ARGV: key prefix, ttl seconds ('' to read without sliding), index lifetime ms.
# Returns a flat list member1, value1, ...; members whose entry is gone are pruned.
GET_ALL_INDEXED = Script(
    "get_all_indexed",
    _HEADER
    + """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
local gone = {}
local slide = ARGV[2] ~= ''
for _, member in ipairs(members) do
  local value
  if slide then value = redis.call('GETEX', ARGV[1] .. member, 'EX', ARGV[2])
  else value = redis.call('GET', ARGV[1] .. member) end
  if value then
    out[#out + 1] = member
    out[#out + 1] = value
    if slide then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) * 1000, member) end
  else
    gone[#gone + 1] = member
  end
end
for _, member in ipairs(gone) do redis.call('ZREM', KEYS[1], member) end
if slide and #out > 0 then outlive(KEYS[1], ARGV[1], now + tonumber(ARGV[3])) end
return out
""",
)

# KEYS: index key. ARGV: key prefix, ttl seconds, index lifetime ms. Gives every live entry the TTL (and its
# exact score); the index then expires ``lifetime`` from now, which outlives them all. Returns how many.
TOUCH_INDEXED = Script(
    "touch_indexed",
    _NOW_MS
    + """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local touched = 0
local gone = {}
local score = now + tonumber(ARGV[2]) * 1000
for _, member in ipairs(members) do
  if redis.call('EXPIRE', ARGV[1] .. member, ARGV[2]) == 1 then
    touched = touched + 1
    redis.call('ZADD', KEYS[1], score, member)
  else
    gone[#gone + 1] = member
  end
end
for _, member in ipairs(gone) do redis.call('ZREM', KEYS[1], member) end
if touched > 0 then redis.call('PEXPIREAT', KEYS[1], now + tonumber(ARGV[3])) end
return touched
""",
)

# KEYS: stats hash, dedupe marker (same slot: its hash tag is the stats key's name). ARGV: marker TTL,
# then field, amount pairs. A retried flush of the same batch (same marker) is applied once, so a flush
# whose reply was lost can be retried without double counting.
FLUSH_STATS = Script(
    "flush_stats",
    """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
""",
)

# KEYS: hash. ARGV: field, value, field, value... Deletes each field that still holds the value read, so a
# field rewritten since (a live instance reporting again) is kept. Returns how many went.
HDEL_UNCHANGED = Script(
    "hdel_unchanged",
    """
local deleted = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    deleted = deleted + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return deleted
""",
)

# KEYS: lock key. ARGV: owner token. Deletes the lock only if this owner still holds it.
RELEASE_LOCK = Script(
    "release_lock",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
)
