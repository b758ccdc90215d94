"""Container events for GetContainerEvents: a fan-out of (event type, record) to every subscriber.

kubelet's evented PLEG keeps one GetContainerEvents stream open and relists when it breaks,
so a subscriber that falls far behind is dropped (its stream ends) rather than let memory grow
without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from cri_shim.store.records import ContainerRecord

log = logging.getLogger("cri_shim.events")

Event = tuple[int, ContainerRecord]
# Events a subscriber may have pending before it is dropped.
BACKLOG = 10000
_END = None


class EventBus:
    """Publishes container events to the streams open at the time."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event | None]] = set()

    def publish(self, event_type: int, record: ContainerRecord) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait((event_type, record))
            except asyncio.QueueFull:
                log.warning("dropping a container event subscriber that fell behind")
                self._end(queue)

    async def subscribe(self) -> AsyncIterator[Event]:
        """Yields every event published from now on, until close() or the subscriber is dropped."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(BACKLOG)
        self._queues.add(queue)
        try:
            while (event := await queue.get()) is not _END:
                yield event
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        """Ends every open stream (the daemon is shutting down)."""
        for queue in list(self._queues):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[Event | None]) -> None:
        self._queues.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(_END)
