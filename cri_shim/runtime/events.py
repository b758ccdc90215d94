"""Container events for GetContainerEvents: a fan-out of events to every subscriber.

Containers' events carry their record; a sandbox's own events (containerd sends CREATED,
STARTED, STOPPED and DELETED with the sandbox's id as the container id, and kubelet's evented
PLEG relies on them) carry a copy of the sandbox record and its containers' records as they
were when it happened, so a DELETED event still names the pod it deleted. Every event is
stamped with the time it was published: kubelet keeps a pod's cached status only when an event
is newer than it.

kubelet's evented PLEG keeps one GetContainerEvents stream open and relists when it breaks,
so a subscriber that falls far behind is dropped (its stream ends) rather than let memory grow
without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

from cri_shim.sandbox.record import Sandbox
from cri_shim.runtime.record import ContainerRecord

log = logging.getLogger("cri_shim.events")


@dataclass(frozen=True)
class SandboxChange:
    """What a sandbox's own event reports: the sandbox and its containers at the time."""

    sandbox: Sandbox
    containers: tuple[ContainerRecord, ...]


class Event(NamedTuple):
    type: int  # a ContainerEventType
    subject: ContainerRecord | SandboxChange
    at: int  # when it was published, in ns since the epoch


# Events a subscriber may have pending before it is dropped.
BACKLOG = 10000
_END = None


class EventBus:
    """Publishes container and sandbox events, in one order, to the streams open at the time."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event | None]] = set()

    def publish(self, event_type: int, subject: ContainerRecord | SandboxChange) -> None:
        event = Event(event_type, subject, time.time_ns())
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
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
