"""``@cache.tool.cached(...)``: cache an async tool function by its bound arguments.

The function's result is stored as JSON and decoded on a hit, so a tool returning a dict gets a dict
back; concurrent misses call the function once (``get_or_compute``). Under ``only_if_cached`` a miss raises
:class:`~agent_cache.CacheMissError` without calling the function.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .._errors import AgentCacheUsageError, CacheMissError

if TYPE_CHECKING:
    from ..types import ToolStoreOptions
    from .tool import ToolCache

P = ParamSpec("P")
R = TypeVar("R")


def cached_tool(
    tools: ToolCache, name: str | None, options: ToolStoreOptions
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(function):
            raise AgentCacheUsageError(f"@cached needs an async function; {function.__qualname__} is not")
        tool_name = name or function.__name__
        signature = inspect.signature(function)

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments: dict[str, Any] = dict(bound.arguments)

            async def compute() -> str:
                result = await function(*args, **kwargs)
                try:
                    return json.dumps(result, ensure_ascii=False, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise AgentCacheUsageError(
                        f"{tool_name} returned a {type(result).__name__}, which cannot be cached as JSON"
                    ) from exc

            outcome = await tools.get_or_compute(tool_name, arguments, compute, options)
            if outcome.response is None:  # only_if_cached and not cached: the function was not called
                raise CacheMissError(f"{tool_name}: no cached result and only_if_cached is set", key=outcome.key)
            value: R = json.loads(outcome.response or "null")
            return value

        return wrapper

    return decorate
