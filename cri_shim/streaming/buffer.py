"""A bounded inbound byte buffer: what a client sends on one stream or channel, waiting for
the backend to read it. When it is full the feeder waits, which stops the connection's frame
loop; neither SPDY (as clients use it) nor WebSocket has per-stream flow control to do better."""

from __future__ import annotations

import asyncio

LIMIT = 1024 * 1024


class InboundBuffer:
    def __init__(self, limit: int = LIMIT) -> None:
        self._data = bytearray()
        self._limit = limit
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.eof = False

    async def read(self, n: int = 65536) -> bytes:
        """Up to n bytes; b"" once closed and empty."""
        while not self._data:
            if self.eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = bytes(self._data[:n])
        del self._data[:n]
        if len(self._data) < self._limit:
            self._room.set()
        return chunk

    async def feed(self, data: bytes) -> None:
        """Appends data (dropped after close); waits while the buffer is over its limit."""
        if self.eof or not data:
            return
        self._data += data
        self._readable.set()
        if len(self._data) >= self._limit:
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        """End of input: readers get what is buffered, then b""."""
        self.eof = True
        self._readable.set()
        self._room.set()

    def discard(self) -> None:
        """End of input, dropping what is buffered (the stream was reset or nobody reads)."""
        self._data.clear()
        self.close()
