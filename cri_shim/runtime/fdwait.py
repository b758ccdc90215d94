"""Waiting on the event loop until a file descriptor can be read or written.

For descriptors asyncio has no stream for, or that need calls its streams do not make: a pty
master, whose end is EIO rather than EOF.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def _ready(fd: int, add: Callable[..., None], remove: Callable[[int], object]) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


async def readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    await _ready(fd, loop.add_reader, loop.remove_reader)


async def writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    await _ready(fd, loop.add_writer, loop.remove_writer)
