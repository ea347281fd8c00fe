"""Lua scripts for the indexed tiers (session threads and tools).

Each script touches one data key family and its index, which share a cluster hash tag, so a script runs
on one node in one round trip. Index members are key suffixes (``prefix .. member`` is the data key),
scored by the entry's expiry in server milliseconds (``inf`` without TTL); expired members are pruned on
every write, and the index itself expires with its last member. Time comes from the server (``TIME``),
so client clock skew cannot prune live entries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


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


_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Keep the index's own expiry at its furthest member (or none when a member never expires).
_FIT_INDEX_EXPIRY = """
local function fit_index_expiry(idx)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  if #top == 0 then return end
  if top[2] == 'inf' then redis.call('PERSIST', idx)
  else redis.call('PEXPIREAT', idx, math.floor(tonumber(top[2]))) end
end
"""

# KEYS: data key, index key. ARGV: member, value, ttl seconds ('' for none).
SET_INDEXED = Script(
    "set_indexed",
    _NOW_MS
    + _FIT_INDEX_EXPIRY
    + """
local score = 'inf'
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  score = now + tonumber(ARGV[3]) * 1000
else
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
fit_index_expiry(KEYS[2])
return 1
""",
)

# KEYS: data key, index key. ARGV: member, ttl seconds. A read that slides the entry's TTL, and its index
# entry with it. The index already outlives every other member, so it only needs extending when this one
# now reaches further (PTTL, no ZRANGE); an index without expiry is refitted as on a write.
GET_SLIDING = Script(
    "get_sliding",
    _FIT_INDEX_EXPIRY
    + """
local value = redis.call('GETEX', KEYS[1], 'EX', ARGV[2])
if value then
"""
    + _NOW_MS
    + """
  local ttl_ms = tonumber(ARGV[2]) * 1000
  redis.call('ZADD', KEYS[2], 'XX', now + ttl_ms, ARGV[1])
  local pttl = redis.call('PTTL', KEYS[2])
  if pttl == -1 then fit_index_expiry(KEYS[2])
  elseif pttl >= 0 and pttl < ttl_ms then redis.call('PEXPIREAT', KEYS[2], now + ttl_ms) end
end
return value
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

# KEYS: index key. ARGV: key prefix, ttl seconds ('' to read without sliding).
# Returns a flat list member1, value1, ...; members whose entry is gone are pruned.
GET_ALL_INDEXED = Script(
    "get_all_indexed",
    _NOW_MS
    + _FIT_INDEX_EXPIRY
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
if slide then fit_index_expiry(KEYS[1]) end
return out
""",
)

# KEYS: index key. ARGV: key prefix, ttl seconds. Refreshes every live entry's TTL; returns how many.
TOUCH_INDEXED = Script(
    "touch_indexed",
    _NOW_MS
    + _FIT_INDEX_EXPIRY
    + """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local touched = 0
local gone = {}
for _, member in ipairs(members) do
  if redis.call('EXPIRE', ARGV[1] .. member, ARGV[2]) == 1 then
    touched = touched + 1
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) * 1000, member)
  else
    gone[#gone + 1] = member
  end
end
for _, member in ipairs(gone) do redis.call('ZREM', KEYS[1], member) end
fit_index_expiry(KEYS[1])
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

# KEYS: lock key. ARGV: owner token. Deletes the lock only if this owner still holds it.
RELEASE_LOCK = Script(
    "release_lock",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
)
