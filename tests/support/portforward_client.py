"""Port-forward as client-go's portforward package does it: per forwarded connection an error
stream (half-closed at once, then read to EOF for a message) and a data stream, both carrying
`port` and `requestid`, on one SPDY connection (TCP, or tunnelled in WebSocket)."""

from __future__ import annotations

import asyncio

from tests.support.spdy_client import ClientStream, SpdyClient, connect


class PortForward:
    """A port-forward connection; each forward() is one pair of streams on it."""

    def __init__(self, conn: SpdyClient) -> None:
        self.conn = conn
        self._next_request = 0

    @classmethod
    async def start(cls, url: str) -> PortForward:
        return cls(await connect(url, ("portforward.k8s.io",)))

    async def open(self, port: int, request_id: str | None = None) -> tuple[ClientStream, ClientStream]:
        """(error, data) streams for one forwarded connection; the error stream is half-closed
        at once, as client-go does."""
        if request_id is None:
            request_id = str(self._next_request)
            self._next_request += 1
        common = {"port": str(port), "requestid": request_id}
        error = await self.conn.open_stream({"streamtype": "error", **common})
        await error.close()
        data = await self.conn.open_stream({"streamtype": "data", **common})
        return error, data

    async def exchange(self, port: int, request: bytes) -> tuple[bytes, bytes]:
        """Sends request bytes, half-closes, returns (everything the target sent, error text)."""
        error, data = await self.open(port)
        await data.write(request)
        await data.close()
        reply, message = await asyncio.gather(data.read_all(), error.read_all())
        return reply, message

    async def close(self) -> None:
        await self.conn.close()
