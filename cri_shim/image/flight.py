"""Single-flight: concurrent requests for the same thing share one piece of work.

Two pods pulling one image, two images sharing a layer: the second caller joins the task
the first started. The work is cancelled only when every caller has gone away (a client's
deadline, a cancelled RPC), so one impatient client cannot break another's pull, and a pull
nobody waits for any more stops and cleans up instead of running on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[T]):
    """Runs at most one task a key; callers of the same key await the same result."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def running(self, key: str) -> bool:
        return key in self._flights

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        flight = self._flights.get(key)
        if flight is None:
            task = asyncio.ensure_future(work())
            flight = self._flights[key] = _Flight(task)
            task.add_done_callback(lambda _t, k=key, f=flight: self._done(k, f))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            flight.waiters -= 1
            if flight.waiters == 0:
                # The last caller left: stop the work and let it clean up before we go.
                flight.task.cancel()
                await asyncio.wait({flight.task})  # unlike gather, wait() never cancels it a second time
            raise

    def _done(self, key: str, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved here so a failure nobody awaited is not logged as lost
