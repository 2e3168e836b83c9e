"""Waiting on another task's or process's state: poll a predicate under a deadline, never sleep and hope."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], object | Awaitable[object]],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    interval: float = 0.005,
) -> None:
    """Wait until `condition()` (a function or a coroutine function) holds; fail naming `what` after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _holds(condition):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def _holds(condition: Callable[[], object | Awaitable[object]]) -> bool:
    result = condition()
    return bool(await result if inspect.isawaitable(result) else result)
