"""docs/migrating.md's table of every public name of betterdb-agent-cache holds, in both directions.

Each test imports both packages: the table must list exactly the reference's public names, every name of ours it
gives must exist and be the same kind of thing (class, coroutine, function), callables must accept the
reference's arguments in the same places, and the reference's dataclasses must construct the same way.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any

from tests.migration.reference_names import MISSING, REFERENCE, Row, is_async, reference_names, resolve, table_rows

FIX = "update the table under '## Every public name' in docs/migrating.md"


def _kind(value: Any) -> str:
    if inspect.isclass(value) or isinstance(value, types.GenericAlias | types.UnionType) or typing.is_typeddict(value):
        return "type"
    if is_async(value):
        return "coroutine function"
    if callable(value):
        return "function"
    return "value"


def _mapped() -> list[tuple[Row, Any, Any]]:
    """(row, reference object, our object) for the rows that name one of ours; fields resolve to None."""
    found = []
    for row in table_rows():
        if row.ours == MISSING:
            continue
        ref, ours = resolve(row.reference, REFERENCE), resolve(row.ours)
        assert ref is not None, f"docs/migrating.md:{row.line}: betterdb_agent_cache.{row.reference} does not exist"
        assert ours is not None, f"docs/migrating.md:{row.line}: agent_cache.{row.ours} does not exist; {FIX}"
        found.append((row, ref.value, ours.value))
    return found


def test_the_table_lists_every_public_name_of_the_reference_once() -> None:
    listed = [row.reference for row in table_rows()]
    expected = reference_names()
    assert sorted({name for name in listed if listed.count(name) > 1}) == [], f"listed twice; {FIX}"
    assert [name for name in expected if name not in listed] == [], f"not in the table; {FIX}"
    assert [name for name in listed if name not in expected] == [], f"not a public name of the reference; {FIX}"


def test_a_name_we_lack_says_what_to_use_instead() -> None:
    for row in table_rows():
        if row.ours == MISSING:
            assert len(row.note) >= 10, f"docs/migrating.md:{row.line}: {row.reference} needs a replacement in notes"


def test_each_name_of_ours_exists_and_is_the_same_kind_of_thing() -> None:
    for row, ref, ours in _mapped():
        if ref is None or ours is None:  # a field or an instance attribute: existing is all there is to check
            continue
        where = f"docs/migrating.md:{row.line}: {row.reference}"
        assert _kind(ours) == _kind(ref), f"{where} is a {_kind(ref)}, ours a {_kind(ours)}"


def _parameters(function: Any) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(function).parameters.values() if p.name not in ("self", "cls")]


def _argument_problems(ref: Any, ours: Any) -> list[str]:
    theirs, mine = _parameters(ref), _parameters(ours)
    by_name = {p.name: p for p in mine}
    takes_any_keyword = any(p.kind is p.VAR_KEYWORD for p in mine)
    problems = []
    for position, parameter in enumerate(theirs):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is not parameter.KEYWORD_ONLY and not (
            position < len(mine) and mine[position].kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        ):
            problems.append(f"does not take {parameter.name!r} as argument {position + 1}")
        if parameter.kind is not parameter.POSITIONAL_ONLY and parameter.name not in by_name and not takes_any_keyword:
            problems.append(f"has no {parameter.name!r} keyword")
        optional_there = parameter.default is not parameter.empty
        if optional_there and by_name.get(parameter.name, parameter).default is parameter.empty:
            problems.append(f"requires {parameter.name!r}, optional in the reference")
    returns_there = str(inspect.signature(ref).return_annotation)
    if (
        returns_there not in ("None", str(inspect.Signature.empty))
        and str(inspect.signature(ours).return_annotation) == "None"
    ):
        problems.append(f"returns None where the reference returns {returns_there}")
    named = {p.name for p in theirs}
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in theirs):
        return problems  # the reference passes anything on: what it needs is its callee's business
    for parameter in mine:
        if parameter.name in named or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is parameter.empty:
            problems.append(f"requires a new argument {parameter.name!r}")
    return problems


# Known differences, each with why it stays or where it is to be fixed: (our name, the problem as reported).
# A fixed one must be removed.
ARGUMENT_DIFFERENCES = {
    # The frameworks call these with every argument: ours declare their base class's signature, the reference
    # made some optional.
    ("adapters.openai_agents.CachedModel.get_response", "requires 'previous_response_id', optional in the reference"),
    ("adapters.pydantic_ai.CachedModel.request", "requires 'model_settings', optional in the reference"),
    ("adapters.pydantic_ai.CachedModel.request", "requires 'model_request_parameters', optional in the reference"),
    # Not yet fixed (library/agent_cache/tiers/tool.py): `if not await cache.tool.refresh_policies()` is always true.
    ("tiers.tool.ToolCache.refresh_policies", "returns None where the reference returns bool"),
}


def test_our_callables_take_the_reference_arguments_in_the_same_places() -> None:
    problems = set()
    for row, ref, ours in _mapped():
        if callable(ref) and callable(ours) and _kind(ref) != "type":
            problems |= {(row.ours, problem) for problem in _argument_problems(ref, ours)}
    assert sorted(problems - ARGUMENT_DIFFERENCES) == [], "a reference call that would fail on agent-cache"
    assert sorted(ARGUMENT_DIFFERENCES - problems) == [], "fixed: remove it from ARGUMENT_DIFFERENCES"


def test_the_reference_dataclasses_construct_the_same_way() -> None:
    for row, ref, ours in _mapped():
        if not (inspect.isclass(ref) and dataclasses.is_dataclass(ref) and dataclasses.is_dataclass(ours)):
            continue
        where = f"docs/migrating.md:{row.line}: agent_cache.{row.ours}"
        theirs = [f for f in dataclasses.fields(ref) if f.init]
        mine = [f for f in dataclasses.fields(ours) if f.init]
        assert [f.name for f in mine[: len(theirs)]] == [f.name for f in theirs], f"{where}: positional order differs"
        for field in theirs:
            match = next(f for f in mine if f.name == field.name)
            if _optional(field):
                assert _optional(match), f"{where}.{field.name} is required here, optional in the reference"
        for field in mine[len(theirs) :]:
            assert _optional(field), f"{where}.{field.name} is a new required field"


def _optional(field: dataclasses.Field[Any]) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
