"""The least-privilege Valkey ACL for one cache: the exact commands, keys and channel it needs.

``agent-cache`` never runs KEYS, FLUSHALL, FLUSHDB, CONFIG or any other command outside this list, on
any path (the ACL test runs every public operation as this user). Use it as::

    ACL SETUSER <user> on ><password> <acl_rule(name)>
"""

from __future__ import annotations

from ._keys import validate_cache_name

# Commands the library sends directly, inside its Lua scripts, and on connect / cluster discovery.
COMMANDS = (
    "get", "set", "del", "getex", "expire", "pexpireat", "persist", "time",
    "hget", "hset", "hdel", "hmget", "hgetall", "hincrby",
    "zadd", "zrem", "zrange", "zrangebyscore", "zcard", "zremrangebyscore", "pttl",
    "evalsha", "eval", "multi", "exec", "scan",
    "publish", "subscribe", "unsubscribe", "ping", "client|setinfo",
    "cluster|slots", "cluster|shards", "command", "readonly",
)  # fmt: skip


def acl_rule(name: str) -> str:
    """Key patterns, channel and commands for cache ``name`` (discovery keys of BetterDB Monitor included)."""
    validate_cache_name(name)
    commands = " ".join(f"+{command}" for command in COMMANDS)
    return f"resetkeys ~{name}:* ~__betterdb:* resetchannels &{name}:__config:changed -@all {commands}"
