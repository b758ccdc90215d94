"""The byte streams sessions run on: TCP after an HTTP upgrade, or a WebSocket tunnel (see
websocket.WebSocketTransport), and how a finished connection is wound down."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol

# How long we wait, after our GOAWAY and half-close, for the client to close its side.
CLOSE_LINGER = 10.0


async def linger(reader: asyncio.Task) -> None:
    """Gives the client a moment to close its side after ours is done, so that nothing it
    still had to read is lost to a reset; skipped when the server itself is shutting down."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), CLOSE_LINGER)


async def open_streams(sock: socket.socket, buffered: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over an accepted socket whose first bytes were read already (what came
    after the request head); they own the socket from then on."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    reader.feed_data(buffered)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class Transport(Protocol):
    """A byte stream under a session: TCP after an HTTP upgrade, or a WebSocket tunnel."""

    async def readexactly(self, n: int) -> bytes: ...

    async def send(self, data: bytes) -> None:
        """Writes and waits for buffer room; raises ConnectionError when the peer is gone."""

    async def finish(self) -> None:
        """Signals the end of our output (TCP half-close or WebSocket close) without waiting."""

    def abort(self) -> None:
        """Closes at once."""


class StreamTransport:
    """Transport over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def readexactly(self, n: int) -> bytes:
        return await self._reader.readexactly(n)

    async def send(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("connection closed")
        self._writer.write(data)
        await self._writer.drain()

    async def finish(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if self._writer.can_write_eof() and not self._writer.is_closing():
                await self._writer.drain()
                self._writer.write_eof()

    def abort(self) -> None:
        self._writer.close()
