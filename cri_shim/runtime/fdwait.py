"""Waiting on the event loop until a file descriptor can be read or written.

For descriptors asyncio has no stream for, or that need calls its streams do not make: a pty
master (EIO at its end), a unix socket read with recvmsg for passed fds.
"""

from __future__ import annotations

import asyncio


async def readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(fd)
