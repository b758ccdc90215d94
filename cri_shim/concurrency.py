"""Running steps concurrently where each must finish even when another fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any


async def gather_all(steps: Iterable[Coroutine[Any, Any, Any]]) -> None:
    """Runs steps concurrently and waits for every one; then raises the first failure.

    asyncio.gather would raise at the first failure and leave the others running unseen,
    which for teardown steps means a release nobody waits for.
    """
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class Attempts:
    """Creations in flight, by the name they reserve (kubelet retries a create it timed out on).

    A retry with the same name joins the attempt under way instead of starting another; a
    caller that gives up (deadline, cancellation) does not stop the attempt, so the retry
    gets its result, as in CRI-O.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[str]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    async def join(self, name: str, start: Callable[[], Coroutine[Any, Any, str]]) -> str:
        """The result of the attempt under this name, started with start() when there is none."""
        task = self._tasks.get(name)
        if task is None:
            task = asyncio.create_task(start())
            self._tasks[name] = task
            task.add_done_callback(lambda t: self._finished(name, t))
        return await asyncio.shield(task)

    def _finished(self, name: str, task: asyncio.Task[str]) -> None:
        self._tasks.pop(name, None)
        if not task.cancelled():
            task.exception()  # retrieved, so an attempt nobody awaits any more is not reported

    async def abandon(self, timeout: float) -> None:
        """Cancels every attempt (each rolls itself back) and waits up to timeout for them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
