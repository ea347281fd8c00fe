"""Lua scripts of the LangGraph checkpointer: every read or write of one thread is one atomic script call.

A thread's checkpoints live in two keys that share the thread's hash tag (``KeyLayout.checkpoint_prefix``; a
tenant's thread has the tag ``{<tenant>:<thread>}``, as its session fields do):

* ``...:data`` — a hash. ``c:<ns>:<id>`` → the checkpoint's JSON envelope (parent id, run id, the blob
  fields it reads, its serialized body and metadata); ``b:<ns>:<channel>:<version>`` → one channel value;
  ``w:<ns>:<id>:<task>:<idx>`` → one pending write (JSON).
* ``...:order`` — a sorted set, every score 0, so members sort lexically: the ``c:``, ``b:`` and ``w:``
  fields above plus ``r:<run>:<ns>:<id>`` per checkpoint of a run. Lexical ranges give "checkpoints of a
  namespace, newest first" (ids are time-ordered UUIDs), "writes of a checkpoint" and "checkpoints of a
  run" in O(log n + answer).

Every segment is percent-encoded (``encode_segment``), so ``:`` only ever separates, and the root
namespace is the empty segment. The thread's index (``KeyLayout.checkpoint_index``) lists the two keys
like a session index lists fields (member = key suffix, score = expiry), which is how
``cache.session.destroy_thread`` removes checkpoints without knowing this layout. A TTL, when set, is
the thread's: every write moves the expiry of both keys and the index, so no checkpoint outlives the
blobs it reads.

KEYS are always (data, order, index) — the index only where a script writes.
"""

from __future__ import annotations

from agent_cache._scripts import Script

_PRELUDE = """
local DATA, ORDER, INDEX = KEYS[1], KEYS[2], KEYS[3]

local function members(prefix)
  return redis.call('ZRANGEBYLEX', ORDER, '[' .. prefix, '(' .. string.sub(prefix, 1, -2) .. ';')
end

local function chunks(list, size)
  local out = {}
  for i = 1, #list, size do
    local chunk = {}
    for j = i, math.min(i + size - 1, #list) do chunk[#chunk + 1] = list[j] end
    out[#out + 1] = chunk
  end
  return out
end

local function hmget(fields)
  local values = {}
  for _, chunk in ipairs(chunks(fields, 500)) do
    for _, value in ipairs(redis.call('HMGET', DATA, unpack(chunk))) do values[#values + 1] = value end
  end
  return values
end

local function remove(fields)
  for _, chunk in ipairs(chunks(fields, 500)) do
    redis.call('HDEL', DATA, unpack(chunk))
    redis.call('ZREM', ORDER, unpack(chunk))
  end
end

local function envelope_field(raw, name)
  local value = cjson.decode(raw)[name]
  if value == cjson.null then return nil end
  return value
end

local function load(suffix)
  local envelope = redis.call('HGET', DATA, 'c:' .. suffix)
  if not envelope then return false end
  local blobs = {}
  local fields = envelope_field(envelope, 'blobs') or {}
  if #fields > 0 then
    local values = hmget(fields)
    for i, field in ipairs(fields) do
      if values[i] then
        blobs[#blobs + 1] = field
        blobs[#blobs + 1] = values[i]
      end
    end
  end
  local writes = {}
  local write_fields = members('w:' .. suffix .. ':')
  if #write_fields > 0 then
    for _, value in ipairs(hmget(write_fields)) do
      if value then writes[#writes + 1] = value end
    end
  end
  return {suffix, envelope, blobs, writes}
end

local function drop(suffix)
  local envelope = redis.call('HGET', DATA, 'c:' .. suffix)
  if envelope then
    local run = envelope_field(envelope, 'run')
    if run then redis.call('ZREM', ORDER, 'r:' .. run .. ':' .. suffix) end
  end
  remove({'c:' .. suffix})
  remove(members('w:' .. suffix .. ':'))
  if envelope then return 1 end
  return 0
end

-- Delete the channel values no remaining checkpoint reads.
local function collect_blobs()
  local used = {}
  for _, member in ipairs(members('c:')) do
    local envelope = redis.call('HGET', DATA, member)
    if envelope then
      for _, field in ipairs(envelope_field(envelope, 'blobs') or {}) do used[field] = true end
    end
  end
  local unused = {}
  for _, field in ipairs(members('b:')) do
    if not used[field] then unused[#unused + 1] = field end
  end
  remove(unused)
end

local function forget_if_empty()
  if redis.call('EXISTS', ORDER) == 0 then redis.call('DEL', DATA, INDEX) end
end

-- The thread's TTL: both keys and the index expire together ('' = never).
local function refresh(ttl)
  if ttl ~= '' then
    local t = redis.call('TIME')
    local ms = tonumber(ttl) * 1000
    local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ms
    redis.call('PEXPIRE', DATA, ms)
    redis.call('PEXPIRE', ORDER, ms)
    redis.call('ZADD', INDEX, expiry, 'data', expiry, 'order')
    redis.call('PEXPIRE', INDEX, ms)
  else
    redis.call('PERSIST', DATA)
    redis.call('PERSIST', ORDER)
    redis.call('ZADD', INDEX, 'inf', 'data', 'inf', 'order')
    redis.call('PERSIST', INDEX)
  end
end
"""

# ARGV: ttl, '<ns>:<id>', envelope, run token ('' for none), then blob field/value pairs.
# Returns 1 when the thread held no checkpoint of that run before (the caller lists the thread in the run's
# index), else 0.
PUT = Script(
    "checkpoint_put",
    _PRELUDE
    + """
local suffix = ARGV[2]
local first_of_run = 0
if ARGV[4] ~= '' then
  local run_prefix = 'r:' .. ARGV[4] .. ':'
  local found = redis.call('ZRANGEBYLEX', ORDER, '[' .. run_prefix, '(r:' .. ARGV[4] .. ';', 'LIMIT', 0, 1)
  if #found == 0 then first_of_run = 1 end
end
local previous = redis.call('HGET', DATA, 'c:' .. suffix)
if previous then
  local run = envelope_field(previous, 'run')
  if run then redis.call('ZREM', ORDER, 'r:' .. run .. ':' .. suffix) end
end
redis.call('HSET', DATA, 'c:' .. suffix, ARGV[3])
redis.call('ZADD', ORDER, 0, 'c:' .. suffix)
if ARGV[4] ~= '' then redis.call('ZADD', ORDER, 0, 'r:' .. ARGV[4] .. ':' .. suffix) end
for i = 5, #ARGV - 1, 2 do
  redis.call('HSET', DATA, ARGV[i], ARGV[i + 1])
  redis.call('ZADD', ORDER, 0, ARGV[i])
end
refresh(ARGV[1])
return first_of_run
""",
)

# ARGV: ttl, then (field, value, '1' to overwrite | '0' to keep an existing write) triples.
PUT_WRITES = Script(
    "checkpoint_put_writes",
    _PRELUDE
    + """
for i = 2, #ARGV - 2, 3 do
  if ARGV[i + 2] == '1' then
    redis.call('HSET', DATA, ARGV[i], ARGV[i + 1])
  else
    redis.call('HSETNX', DATA, ARGV[i], ARGV[i + 1])
  end
  redis.call('ZADD', ORDER, 0, ARGV[i])
end
refresh(ARGV[1])
return 1
""",
)

# ARGV: ns token, id token ('' for the namespace's latest). Returns {suffix, envelope, blobs, writes} or nil.
GET = Script(
    "checkpoint_get",
    _PRELUDE
    + """
local suffix
if ARGV[2] == '' then
  local latest = redis.call('ZREVRANGEBYLEX', ORDER, '(c:' .. ARGV[1] .. ';', '[c:' .. ARGV[1] .. ':', 'LIMIT', 0, 1)
  if #latest == 0 then return false end
  suffix = string.sub(latest[1], 3)
else
  suffix = ARGV[1] .. ':' .. ARGV[2]
end
return load(suffix)
""",
)

# ARGV: max, min (ZREVRANGEBYLEX bounds over c: members), count.
# Returns {members seen, last member seen, record...}; a page shorter than count is the last one.
LIST = Script(
    "checkpoint_list",
    _PRELUDE
    + """
local seen = redis.call('ZREVRANGEBYLEX', ORDER, ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {#seen, seen[#seen] or ''}
for _, member in ipairs(seen) do
  local record = load(string.sub(member, 3))
  if record then out[#out + 1] = record end
end
return out
""",
)

# Returns the thread's run members (r:...). The saver reads them and unlists the thread from those runs' indexes
# before it calls this, so a checkpoint put meanwhile is deleted here or listed again by its put.
DELETE_THREAD = Script(
    "checkpoint_delete_thread",
    _PRELUDE
    + """
local runs = members('r:')
redis.call('DEL', DATA, ORDER, INDEX)
return runs
""",
)

# ARGV: run tokens. Drops the thread's checkpoints of those runs (and their writes); returns how many.
DELETE_RUNS = Script(
    "checkpoint_delete_runs",
    _PRELUDE
    + """
local dropped = 0
for _, run in ipairs(ARGV) do
  local prefix = 'r:' .. run .. ':'
  for _, member in ipairs(members(prefix)) do
    dropped = dropped + drop(string.sub(member, #prefix + 1))
    redis.call('ZREM', ORDER, member)
  end
end
if dropped > 0 then collect_blobs() end
forget_if_empty()
return dropped
""",
)

# Keeps each namespace's latest checkpoint (with its writes and the values it reads); returns how many went.
PRUNE_KEEP_LATEST = Script(
    "checkpoint_prune_keep_latest",
    _PRELUDE
    + """
local all = members('c:')
local latest = {}
for _, member in ipairs(all) do
  local suffix = string.sub(member, 3)
  latest[string.match(suffix, '^([^:]*):')] = suffix
end
local keep = {}
for _, suffix in pairs(latest) do keep[suffix] = true end
local dropped = 0
for _, member in ipairs(all) do
  local suffix = string.sub(member, 3)
  if not keep[suffix] then dropped = dropped + drop(suffix) end
end
if dropped > 0 then collect_blobs() end
return dropped
""",
)

# Returns {hash field/value pairs, order members} of a thread (copy_thread's source side).
EXPORT = Script(
    "checkpoint_export",
    _PRELUDE
    + """
return {redis.call('HGETALL', DATA), redis.call('ZRANGE', ORDER, 0, -1)}
""",
)

# ARGV: ttl, number of field/value items, the items, then order members (copy_thread's target side).
IMPORT = Script(
    "checkpoint_import",
    _PRELUDE
    + """
local n = tonumber(ARGV[2])
if n == 0 then return 0 end
for i = 3, 2 + n, 2 do redis.call('HSET', DATA, ARGV[i], ARGV[i + 1]) end
for i = 3 + n, #ARGV do redis.call('ZADD', ORDER, 0, ARGV[i]) end
refresh(ARGV[1])
return n / 2
""",
)
