"""Defects found by reviewing the finished parts of issues 13 and 14, each shown on a real Valkey.

A test marked ``xfail(strict=True)`` shows a defect whose fix belongs to a part still being worked on: it
passes (and so fails the suite) as soon as the fix lands, and its marker must then go.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lifecycle.programs import run_program
from tests.servers import ServerHandle

pytestmark = pytest.mark.valkey

ONE_CACHE_LOOP_AFTER_LOOP = """
    import asyncio
    import os

    from valkey.asyncio import Valkey

    from agent_cache import AgentCache, BackendError, DiscoveryOptions

    client = Valkey(host="127.0.0.1", port=int(os.environ["VALKEY_PORT"]))
    cache = AgentCache(client=client, name="review_loops", discovery=DiscoveryOptions(enabled=False))


    async def concurrent_stats():
        cache.tool.reset_policies()  # each stats() re-reads the live config: both refresh at once
        await cache.tool.store("lookup", {"id": 1}, "r")
        assert (await cache.tool.check("lookup", {"id": 1})).hit  # a count to flush: both flush at once
        return await asyncio.gather(cache.stats(), cache.stats(), return_exceptions=True)


    for run in range(3):
        for outcome in asyncio.run(concurrent_stats()):
            # valkey-py's pooled connections of an ended loop fail once each (a BackendError: the client's
            # matter); anything else escaped the cache.
            if isinstance(outcome, BaseException) and not isinstance(outcome, BackendError):
                print("escaped", repr(outcome))
    print("done")
"""


def test_one_cache_serves_loop_after_loop_with_concurrent_calls(valkey_server: ServerHandle, tmp_path: Path) -> None:
    """A module-level cache used by one ``asyncio.run`` after another (closing is not required): the locks
    that serialize stats flushes and live-config refreshes were bound to the first loop that contended for
    them, so concurrent calls in the next loop raised ``RuntimeError: ... bound to a different event loop``
    (and the same error ended the background upkeep and the config watcher for good)."""
    outcome = run_program(ONE_CACHE_LOOP_AFTER_LOOP, tmp_path, valkey_server.port)
    assert outcome.returncode == 0, outcome.stderr
    assert "done" in outcome.stdout
    assert "escaped" not in outcome.stdout, outcome.stdout
    assert "bound to a different event loop" not in outcome.stderr, outcome.stderr
