"""The public names of betterdb-agent-cache 0.12.0 and where each one lives in agent-cache.

``reference_names()`` walks the installed reference package: every module's ``__all__`` (or, without one, the
classes, functions and constants it defines, not what it imports), and each public class's methods, instance
attributes set in ``__init__``, dataclass fields and TypedDict keys. ``resolve()`` finds a dotted name in
``agent_cache`` the same ways. ``docs/migrating.md`` holds the table of both, and ``test_name_table`` checks it
against these two functions so it cannot drift from either package.

Import with ``BETTERDB_TELEMETRY=false`` set (``conftest.py`` does): the reference reads it before it would
start its product analytics.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import textwrap
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REFERENCE = "betterdb_agent_cache"
OURS = "agent_cache"
MIGRATING = Path(__file__).resolve().parents[2] / "docs" / "migrating.md"
TABLE_HEADING = "## Every public name"
MISSING = "—"


@dataclass(frozen=True)
class Found:
    """A name resolved in a package: the object, or ``None`` for a field/attribute that has no class-level value."""

    path: str
    value: Any
    owner: type | None = None


def _modules(package: str) -> list[ModuleType]:
    root = importlib.import_module(package)
    names = [package, *sorted(m.name for m in pkgutil.walk_packages(root.__path__, f"{package}."))]
    return [importlib.import_module(name) for name in names]


def _defined(module: ModuleType) -> list[str]:
    """Names a module defines at its top level (classes, functions, assignments), not the ones it imports."""
    tree = ast.parse(Path(module.__file__ or "").read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [name for name in names if not name.startswith("_")]


def _init_attributes(cls: type) -> list[str]:
    """Public attributes a class's ``__init__`` assigns on ``self``."""
    init = cls.__dict__.get("__init__")
    if init is None or not inspect.isfunction(init):
        return []
    try:
        source = inspect.getsource(init)
    except OSError:  # generated (a dataclass's): its attributes are the fields
        return []
    tree = ast.parse(textwrap.dedent(source))
    return [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, ast.Store)
        and not node.attr.startswith("_")
    ]


def members(cls: type) -> list[str]:
    """The public members of a class: methods and properties, ``__init__`` attributes, fields, TypedDict keys."""
    if typing.is_typeddict(cls):
        return sorted(typing.get_type_hints(cls, include_extras=False).keys() | cls.__annotations__.keys())
    names = {name for name in vars(cls) if not name.startswith("_")}
    names |= set(_init_attributes(cls))
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return sorted(names)


def reference_names() -> list[str]:
    """Every public name of the reference, relative to ``betterdb_agent_cache`` (``types.ToolPolicy.ttl``)."""
    found: list[str] = []
    for module in _modules(REFERENCE):
        relative = module.__name__.removeprefix(REFERENCE).lstrip(".")
        names = list(getattr(module, "__all__", None) or _defined(module))
        for name in names:
            path = f"{relative}.{name}" if relative else name
            found.append(path)
            value = getattr(module, name)
            if inspect.isclass(value) and value.__module__ == module.__name__:
                found += [f"{path}.{member}" for member in members(value)]
    return found


def _walk(package: str, path: str) -> Iterator[Found]:
    """Yield the object at ``package.path``: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for split in range(len(parts), -1, -1):
        candidate = ".".join([package, *parts[:split]])
        try:
            value: Any = importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            if exc.name and (candidate == exc.name or candidate.startswith(f"{exc.name}.")):
                continue  # not a module: an attribute of a shorter prefix
            raise  # the module exists but is broken: say so, do not report the name as missing
        owner: type | None = None
        for index, part in enumerate(parts[split:], start=split):
            if inspect.isclass(value) and part not in vars(value) and not hasattr(value, part):
                if part in members(value):
                    if index != len(parts) - 1:
                        return
                    yield Found(path, None, value)
                    return
                return
            if not hasattr(value, part):
                return
            owner = value if inspect.isclass(value) else None
            value = getattr(value, part)
        yield Found(path, value, owner)
        return


def resolve(path: str, package: str = OURS) -> Found | None:
    return next(_walk(package, path), None)


def is_async(value: Any) -> bool:
    """A coroutine function, or a function documented (annotated) to return an awaitable."""
    if inspect.iscoroutinefunction(value):
        return True
    if callable(value) and not inspect.isclass(value):
        returns = str(getattr(value, "__annotations__", {}).get("return", ""))
        return bool(re.match(r"(Awaitable|Coroutine)\b", returns))
    return False


@dataclass(frozen=True)
class Row:
    reference: str
    ours: str
    note: str
    line: int


def table_rows(page: Path = MIGRATING) -> list[Row]:
    """The rows of the page's name table: ``| `reference` | `ours` or — | note |``."""
    lines = page.read_text().splitlines()
    start = lines.index(TABLE_HEADING)
    rows: list[Row] = []
    header = True
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            continue
        if header or line.startswith("|---"):
            header = False  # the header row, then the separator
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3:
            raise ValueError(f"{page}:{number}: a row of the name table needs 3 cells (no '|' in notes)")
        rows.append(Row(cells[0].strip("`"), cells[1].strip("`"), cells[2], number))
    return rows
