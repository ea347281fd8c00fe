"""Read-then-delete sequences of the live config protocol against a writer that runs between their steps."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agent_cache._backend import Backend
from agent_cache.config import list_instances

pytestmark = pytest.mark.valkey


async def test_pruning_stale_instances_keeps_one_that_reported_again_meanwhile(
    backend_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "live:__instances"
    old = {"version": "v1", "seen": time.time() - 3600, "host": "pod-a", "pid": 1}
    fresh = {**old, "seen": time.time()}
    await backend_client.hset(key, mapping={"pod-a:1:x": json.dumps(old), "gone:2:y": "not json"})
    real_command, real_run_script = Backend.command, Backend.run_script
    reported = False

    async def report_again() -> None:
        nonlocal reported
        if not reported:
            reported = True
            await backend_client.hset(key, "pod-a:1:x", json.dumps(fresh))  # the instance's heartbeat

    async def command(self: Backend, name: str, *args: Any) -> Any:
        if name != "HGETALL":
            await report_again()  # between reading the stale record and deleting it
        return await real_command(self, name, *args)

    async def run_script(self: Backend, script: Any, keys: Any, args: Any) -> Any:
        await report_again()
        return await real_run_script(self, script, keys, args)

    monkeypatch.setattr(Backend, "command", command)
    monkeypatch.setattr(Backend, "run_script", run_script)
    assert await list_instances(backend_client, "live") == []  # it read the stale record
    assert reported
    monkeypatch.undo()
    assert await backend_client.hkeys(key) == [b"pod-a:1:x"]  # the garbage went, the live instance stayed
    [instance] = await list_instances(backend_client, "live")
    assert (instance.instance_id, instance.host) == ("pod-a:1:x", "pod-a")
