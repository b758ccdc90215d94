"""Exec and attach over WebSocket (channel protocols, CRI §3.3): the second transport.

Every binary message is `[channel][payload]`: 0 stdin, 1 stdout, 2 stderr, 3 error/status,
4 resize. v5 adds the close signal `[255, channel]` with which the client half-closes stdin
(v4 has no way to, so its stdin ends with the connection). Once ready, the server sends an
empty message on the lowest channel it will write (stdout, else stderr, else error); at the
end it writes the status on channel 3 and closes with 1000, which client-go reads as EOF on
every stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cri_shim.streaming import command, status
from cri_shim.streaming.backend import Backends, StreamIO
from cri_shim.streaming.buffer import InboundBuffer
from cri_shim.streaming.requests import AttachRequest, ExecRequest
from cri_shim.streaming.transport import linger
from cri_shim.streaming.websocket import CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, OP_BINARY, WebSocket

log = logging.getLogger("cri_shim.streaming")

V5, V4, V1 = "v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"
# "" is a client that offers no subprotocol: the original channel protocol.
PROTOCOLS = (V5, V4, V1, "")
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255


class _Output:
    def __init__(self, ws: WebSocket, channel: int) -> None:
        self._ws = ws
        self._prefix = bytes([channel])

    async def write(self, data: bytes) -> None:
        await self._ws.send(self._prefix + data)


async def _demux(ws: WebSocket, protocol: str, inbound: dict[int, InboundBuffer]) -> None:
    """Routes client messages to stdin and resize until the connection closes."""
    try:
        while (message := await ws.receive()) is not None:
            opcode, data = message
            if opcode != OP_BINARY:
                log.warning("text message on a binary channel protocol, closing")
                await ws.close(CLOSE_PROTOCOL_ERROR)
                return
            if not data:
                continue
            if protocol == V5 and data[0] == CLOSE_SIGNAL:
                if len(data) != 2:
                    await ws.close(CLOSE_PROTOCOL_ERROR)
                    return
                if data[1] in inbound:
                    inbound[data[1]].close()
                continue
            buffer = inbound.get(data[0])
            if buffer is not None:
                await buffer.feed(data[1:])
    finally:
        for buffer in inbound.values():
            buffer.close()


async def serve(ws: WebSocket, protocol: str, request: ExecRequest | AttachRequest, backends: Backends) -> None:
    inbound: dict[int, InboundBuffer] = {}
    if request.stdin:
        inbound[STDIN] = InboundBuffer()
    if request.tty:
        inbound[RESIZE] = InboundBuffer()
    stdout = _Output(ws, STDOUT) if request.stdout else None
    stderr = _Output(ws, STDERR) if request.stderr and not request.tty else None
    io = StreamIO(request.tty, inbound.get(STDIN), stdout, stderr)
    reader = asyncio.create_task(_demux(ws, protocol, inbound))
    reader.add_done_callback(lambda _: io.disconnected.set())
    resizer = asyncio.create_task(command.pump_resizes(inbound[RESIZE], io)) if RESIZE in inbound else None
    if resizer is None:
        io.resize_queue.put_nowait(None)
    try:
        ready = STDOUT if stdout else STDERR if stderr else ERROR
        with contextlib.suppress(ConnectionError):
            await ws.send(bytes([ready]))
        result = await command.run(request, backends, io)
        payload = status.encode(result, protocol or V1)
        if payload:
            with contextlib.suppress(ConnectionError):
                await ws.send(bytes([ERROR]) + payload)
        await ws.close(CLOSE_NORMAL)
        await linger(reader)
    finally:
        await command.stop(resizer)
        await command.stop(reader)
        ws.abort()
