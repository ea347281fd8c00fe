"""The least-privilege Valkey ACL for one cache: the exact commands, keys and channel it needs.

``agent-cache`` never runs KEYS, FLUSHALL, FLUSHDB, CONFIG or any other command outside this list, on
any path — the tiers, the LangGraph saver and the LangChain cache included (``tests/integration/test_acl.py``
runs every public operation as this user and requires an empty ``ACL LOG``). Use it as::

    ACL SETUSER <user> on ><password> <acl_rule(name)>

The key patterns name the cache's key families (``{name}:llm:*`` ... ``{name}:__*``) rather than ``{name}:*``,
which would also grant the keys of a cache named ``{name}:<more>``.
"""

from __future__ import annotations

from ._keys import KeyLayout

# Commands the library and the agent-cache CLI send directly, inside their Lua scripts (the LangGraph saver's too),
# and on connect / cluster discovery.
COMMANDS = (
    "get", "set", "del", "exists", "getex", "expire", "pexpire", "pexpireat", "persist", "pttl", "time",
    "hget", "hset", "hsetnx", "hdel", "hmget", "hgetall", "hincrby",
    "zadd", "zrem", "zrange", "zrangebyscore", "zrangebylex", "zrevrangebylex", "zcard", "zremrangebyscore", "zscan",
    "sadd", "srem", "smembers",
    "evalsha", "eval", "multi", "exec", "scan",
    "publish", "subscribe", "unsubscribe", "ping", "client|setinfo",
    "cluster|slots", "cluster|shards", "command", "readonly",
    "client|id", "client|tracking", "role",  # the near-cache: its invalidation link and tracked reads
    "info",  # memory and eviction figures for the metrics (INFO memory stats; never CONFIG)
)  # fmt: skip


def acl_rule(name: str) -> str:
    """Key patterns, channel and commands for cache ``name`` (discovery keys of BetterDB Monitor included)."""
    keys = KeyLayout(name)
    patterns = " ".join(f"~{pattern}" for pattern in keys.acl_key_patterns())
    commands = " ".join(f"+{command}" for command in COMMANDS)
    channels = f"&{keys.config}:changed &__redis__:invalidate"  # the second: the near-cache's invalidations
    return f"resetkeys {patterns} ~__betterdb:* resetchannels {channels} -@all {commands}"
