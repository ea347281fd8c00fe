"""The forgetful user: programs and test suites that never call ``close()`` must still end.

The reference README's quick start (a module-level cache, ``asyncio.run(main())``, no close) used to hang
at exit in most runs: the loop's shutdown cancels the background tasks, valkey-py lost or reshaped the
cancellation, and the config watcher retried for ever. Closing is recommended (it flushes the last
counters and removes the heartbeat), never required.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent_cache.embedded import EmbeddedCluster
from tests.lifecycle.programs import CLUSTER_QUICK_START, REFERENCE_QUICK_START, run_program, run_pytest
from tests.servers import ServerHandle

pytestmark = pytest.mark.valkey


def assert_clean_exit(outcome: subprocess.CompletedProcess[str], *, printed: str) -> None:
    assert outcome.returncode == 0, f"exit {outcome.returncode}\n{outcome.stdout}\n{outcome.stderr}"
    assert printed in outcome.stdout, outcome.stdout
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert "Task was destroyed but it is pending" not in outcome.stderr, outcome.stderr


def test_reference_quick_start_without_close_exits_every_time(valkey_server: ServerHandle, tmp_path: Path) -> None:
    for run in range(4):  # it hung in most runs, not all: several runs make a pass mean something
        outcome = run_program(REFERENCE_QUICK_START, tmp_path, valkey_server.port, name=f"quick_start_{run}.py")
        assert_clean_exit(outcome, printed="exited main")
        assert "intent book_flight" in outcome.stdout


def test_cluster_quick_start_without_close_exits_every_time(valkey_cluster: EmbeddedCluster, tmp_path: Path) -> None:
    ports = [port for _, port in valkey_cluster.startup_nodes]
    for run in range(3):
        outcome = run_program(CLUSTER_QUICK_START, tmp_path, 0, name=f"cluster_{run}.py", cluster_ports=ports)
        assert_clean_exit(outcome, printed="exited main")
        assert "intent book_flight" in outcome.stdout


def test_a_users_polling_task_left_running_ends_with_the_loop(valkey_server: ServerHandle, tmp_path: Path) -> None:
    # The user's own background task catches Exception around cache calls and goes on: the loop's
    # shutdown cancellation must reach it as CancelledError, whatever valkey-py made of it.
    program = """
        import asyncio, os
        from valkey.asyncio import Valkey
        from agent_cache import AgentCache

        client = Valkey(host="127.0.0.1", port=int(os.environ["VALKEY_PORT"]), socket_timeout=5)
        cache = AgentCache(client=client, name="poller")
        params = {"model": "m", "messages": [{"role": "user", "content": "poll"}]}

        async def poll():
            while True:
                try:
                    await cache.llm.check(params)
                    await cache.session.set("t", "f", "v")
                except Exception:
                    pass

        async def main():
            asyncio.get_running_loop().create_task(poll())
            for _ in range(200):
                await asyncio.sleep(0)
            print("main done")

        asyncio.run(main())
        print("exited")
    """
    for run in range(3):
        outcome = run_program(program, tmp_path, valkey_server.port, name=f"poller_{run}.py")
        assert_clean_exit(outcome, printed="exited")


def test_sync_cache_never_closed_exits_and_flushes_at_exit(valkey_server: ServerHandle, tmp_path: Path) -> None:
    program = """
        import os
        from agent_cache import SyncAgentCache

        cache = SyncAgentCache(f"valkey://127.0.0.1:{os.environ['VALKEY_PORT']}", name="sync_forgetful",
                               stats_flush_interval_s=3600)
        cache.flush()
        cache.llm.check({"model": "m", "messages": [{"role": "user", "content": "q"}]})
        print("exited")
    """
    outcome = run_program(program, tmp_path, valkey_server.port)
    assert_clean_exit(outcome, printed="exited")
    reader = run_program(
        """
        import os
        from agent_cache import SyncAgentCache

        with SyncAgentCache(f"valkey://127.0.0.1:{os.environ['VALKEY_PORT']}", name="sync_forgetful") as cache:
            print("misses", cache.stats().llm.misses)
        """,
        tmp_path,
        valkey_server.port,
        name="reader.py",
    )
    assert "misses 1" in reader.stdout, reader.stdout + reader.stderr  # flushed at interpreter exit


def test_loop_closed_with_the_cache_tasks_still_running_exits(valkey_server: ServerHandle, tmp_path: Path) -> None:
    # No asyncio.run(): the loop is closed without cancelling anything. asyncio itself reports the
    # pending tasks it destroys; the process must still end.
    program = """
        import asyncio, os
        from valkey.asyncio import Valkey
        from agent_cache import AgentCache

        async def main():
            cache = AgentCache(client=Valkey(host="127.0.0.1", port=int(os.environ["VALKEY_PORT"])), name="abandoned")
            await cache.session.set("t", "f", "v")
            print("value", await cache.session.get("t", "f"))

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
        print("exited")
    """
    outcome = run_program(program, tmp_path, valkey_server.port)
    assert outcome.returncode == 0, outcome.stderr
    assert "value v" in outcome.stdout and "exited" in outcome.stdout


PYTEST_LOOPS_NEVER_CLOSING = """
    import os

    import pytest
    from valkey.asyncio import Valkey

    from agent_cache import AgentCache

    PORT = int(os.environ["VALKEY_PORT"])


    @pytest.fixture
    async def cache():
        client = Valkey(host="127.0.0.1", port=PORT)
        yield AgentCache(client=client, name="forgetful")  # never closed
        await client.aclose()


    @pytest.mark.parametrize("round", range(8))
    async def test_fresh_cache_per_loop(cache, round):
        # Ends right after its first command, while the cache's background tasks are starting.
        await cache.session.set("thread", f"field{round}", "v")


    async def test_the_next_loop_works(cache):
        params = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
        await cache.llm.store(params, "a")
        assert (await cache.llm.check(params)).response == "a"
        assert len(await cache.session.get_all("thread")) == 8
"""


def test_pytest_asyncio_loops_with_fixtures_that_never_close(valkey_server: ServerHandle, tmp_path: Path) -> None:
    outcome = run_pytest(PYTEST_LOOPS_NEVER_CLOSING, tmp_path, valkey_server.port)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert "9 passed" in outcome.stdout, outcome.stdout


LANGCHAIN_SUITE_NEVER_CLOSING = """
    import os

    import pytest
    from langchain_core.caches import BaseCache
    from langchain_tests.integration_tests.cache import AsyncCacheTestSuite
    from valkey.asyncio import Valkey

    from agent_cache import AgentCache
    from agent_cache.adapters.langchain import BetterDBLlmCache


    class TestAsyncSuiteCacheNeverClosed(AsyncCacheTestSuite):
        @pytest.fixture
        async def cache(self) -> BaseCache:
            client = Valkey(host="127.0.0.1", port=int(os.environ["VALKEY_PORT"]))
            await client.flushall()
            return BetterDBLlmCache(AgentCache(client=client, name="lc_forgetful"))  # neither ever closed
"""


def test_langchain_async_suite_with_a_fixture_that_never_closes(valkey_server: ServerHandle, tmp_path: Path) -> None:
    pytest.importorskip("langchain_tests")
    outcome = run_pytest(LANGCHAIN_SUITE_NEVER_CLOSING, tmp_path, valkey_server.port)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert " passed" in outcome.stdout and "failed" not in outcome.stdout, outcome.stdout
