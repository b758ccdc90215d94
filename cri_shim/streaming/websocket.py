"""WebSocket (RFC 6455) on asyncio streams: the opening handshake, frames, and a connection
that yields whole data messages while answering pings and close frames itself.

Both ends are here (the client side is what the tests drive us with): a client masks what it
sends and receives unmasked frames, a server the opposite. Messages are capped in size; a
protocol violation closes with 1002 and ends the message stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import struct

from cri_shim.streaming.httpio import Refused, Request, response

log = logging.getLogger("cri_shim.streaming")

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG = 1000, 1002, 1009
MAX_MESSAGE = 4 * 1024 * 1024


class WebSocketError(ValueError):
    """A frame that breaks RFC 6455."""


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def server_handshake(request: Request, supported: tuple[str, ...]) -> tuple[str, bytes]:
    """The chosen subprotocol (first one the client offers that we support; "" when it
    offers none and "" is supported) and the 101 response. Refused otherwise."""
    if request.method != "GET":
        raise Refused(response(400, body="websocket upgrade must use GET"))
    if request.header("Sec-WebSocket-Version") != "13":
        raise Refused(response(426, [("Sec-WebSocket-Version", "13")], "unsupported websocket version"))
    key = request.header("Sec-WebSocket-Key")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise Refused(response(400, body="bad Sec-WebSocket-Key")) from None
    offered = request.values("Sec-WebSocket-Protocol") or [""]
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        raise Refused(response(403, body=f"requested protocol(s) are not supported: {offered}; supports {list(supported)}"))
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
    if chosen:
        headers.append(("Sec-WebSocket-Protocol", chosen))
    return chosen, response(101, headers)


def _xor(data: bytes, key: bytes) -> bytes:
    n = len(data)
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = False) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if masked:
        key = os.urandom(4)
        return head + key + _xor(payload, key)
    return head + payload


async def read_frame(reader: asyncio.StreamReader, want_masked: bool, limit: int = MAX_MESSAGE) -> tuple[bool, int, bytes]:
    """One frame: (fin, opcode, unmasked payload)."""
    b0, b1 = await reader.readexactly(2)
    if b0 & 0x70:
        raise WebSocketError("reserved bits set (no extension was negotiated)")
    fin, opcode, masked, n = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
    if masked != want_masked:
        raise WebSocketError("client frames must be masked, server frames must not")
    if opcode >= 0x8 and (not fin or n > 125):
        raise WebSocketError("fragmented or oversized control frame")
    if n == 126:
        (n,) = struct.unpack(">H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack(">Q", await reader.readexactly(8))
    if n > limit:
        raise WebSocketError(f"frame of {n} bytes")
    key = await reader.readexactly(4) if masked else b""
    payload = await reader.readexactly(n)
    return fin, opcode, _xor(payload, key) if masked else payload


class WebSocket:
    """One WebSocket connection after the handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: bool = False) -> None:
        self._reader = reader
        self._writer = writer
        self._client = client
        self._lock = asyncio.Lock()
        self.close_sent = False
        self.close_code: int | None = None

    async def receive(self) -> tuple[int, bytes] | None:
        """The next data message (opcode, payload), or None once the connection is closing."""
        parts: list[bytes] = []
        size = 0
        first_op = None
        try:
            while True:
                fin, opcode, payload = await read_frame(self._reader, not self._client)
                if opcode == OP_PING:
                    await self._send_frame(OP_PONG, payload)
                    continue
                if opcode == OP_PONG:
                    continue
                if opcode == OP_CLOSE:
                    self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else CLOSE_NORMAL
                    await self.close(self.close_code)
                    return None
                if opcode not in (OP_CONT, OP_TEXT, OP_BINARY) or (opcode == OP_CONT) != (first_op is not None):
                    raise WebSocketError(f"unexpected opcode {opcode}")
                first_op = opcode if first_op is None else first_op
                size += len(payload)
                if size > MAX_MESSAGE:
                    raise WebSocketError(f"message over {MAX_MESSAGE} bytes")
                parts.append(payload)
                if fin:
                    return first_op, b"".join(parts)
        except WebSocketError as exc:
            log.warning("bad websocket input, closing", extra={"error": str(exc)})
            await self.close(CLOSE_PROTOCOL_ERROR)
            return None
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return None

    async def send(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        """Sends one message; raises ConnectionError once the connection is closing."""
        if self.close_sent:
            raise ConnectionResetError("websocket closed")
        await self._send_frame(opcode, payload)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Sends our close frame once; the peer answers with its own and closes TCP."""
        if self.close_sent:
            return
        self.close_sent = True
        with contextlib.suppress(ConnectionError, OSError):
            await self._send_frame(OP_CLOSE, struct.pack(">H", code) + reason.encode()[:120])

    def abort(self) -> None:
        self._writer.close()

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        async with self._lock:
            if self._writer.is_closing():
                raise ConnectionResetError("connection closed")
            self._writer.write(encode_frame(opcode, payload, masked=self._client))
            await self._writer.drain()


class WebSocketTransport:
    """A byte stream carried in binary messages: the SPDY/3.1+portforward.k8s.io tunnel,
    where each message holds any slice of the SPDY byte stream."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._buffer = bytearray()

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            message = await self._ws.receive()
            if message is None:
                raise asyncio.IncompleteReadError(bytes(self._buffer), n)
            if message[0] != OP_BINARY:
                await self._ws.close(CLOSE_PROTOCOL_ERROR)
                raise asyncio.IncompleteReadError(bytes(self._buffer), n)
            self._buffer += message[1]
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    async def send(self, data: bytes) -> None:
        await self._ws.send(data)

    async def finish(self) -> None:
        await self._ws.close(CLOSE_NORMAL)

    def abort(self) -> None:
        self._ws.abort()
