"""The operator-facing subcommands of ``agent-cache``: look inside a cache, tune it, clean it up.

One module per subcommand group (``stats``, ``top``, ``tools``, ``invalidate``, ``config``, ``caches``,
``flush``), each with a ``register(subparsers)`` function listed in :data:`agent_cache.cli.COMMANDS`.
Connecting (``--url``, passwords, TLS, cluster, the embedded server) lives in ``_connection``; consoles, exit
codes and number formats in ``_terminal``; reading a cache's counters, registry entry and TTLs in ``_readers``.

They read Valkey directly and never start an ``AgentCache`` just to look: an inspection must not register a
heartbeat, report an instance or flush counters of its own. Commands that delete (``invalidate``, ``flush``)
call the library's own methods on a cache with discovery and live config switched off.

Exit codes scripts can rely on: 0 done; 1 the command failed (or, for ``config diff``, the file differs from
the live config); 2 bad usage or Valkey unreachable; 3 nothing found / nothing to do; 130 interrupted.
"""
