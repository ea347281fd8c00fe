"""Code that raises the reference's errors itself (wrappers, tests) keeps working after the import change."""

from __future__ import annotations

import betterdb_agent_cache as reference

from agent_cache import AgentCacheError, BackendError, ValkeyCommandError


def test_valkey_command_error_takes_the_reference_command_and_cause() -> None:
    cause = ConnectionResetError("reset by peer")
    ours = ValkeyCommandError("GET", cause)
    theirs = reference.ValkeyCommandError("GET", cause)
    assert (str(ours), ours.command, ours.__cause__) == (str(theirs), theirs.command, theirs.__cause__)
    assert isinstance(ours, BackendError) and isinstance(ours, AgentCacheError)


def test_valkey_command_error_keeps_our_message_form() -> None:
    ours = ValkeyCommandError("Valkey command GET failed (WRONGTYPE)", command="GET")
    assert (str(ours), ours.command, ours.__cause__) == ("Valkey command GET failed (WRONGTYPE)", "GET", None)
