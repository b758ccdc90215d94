"""A WebSocket client for the streaming server, as client-go's WebSocket executor (channel
protocol v5, else v4) and its port-forward tunnel (SPDY/3.1+portforward.k8s.io) use it.

Usable from a plain script:

    python -m tests.support.ws_client URL [--stdin TEXT] [--tty]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys

from cri_shim.streaming.websocket import OP_BINARY, WebSocket, WebSocketTransport, accept_key
from tests.support.portforward_client import PortForward
from tests.support.spdy_client import Result, SpdyClient
from tests.support.upgrade import UpgradeFailed, upgrade

__all__ = ["connect", "WsRemoteCommand", "tunnel_port_forward", "UpgradeFailed"]

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


async def connect(url: str, protocols: tuple[str, ...]) -> tuple[WebSocket, str]:
    """Opens a WebSocket; returns it and the subprotocol the server chose."""
    key = base64.b64encode(os.urandom(16)).decode()
    headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", key)]
    if protocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    reader, writer, got = await upgrade(url, "GET", headers)
    if got.get("sec-websocket-accept") != [accept_key(key)]:
        writer.close()
        raise ConnectionError("bad Sec-WebSocket-Accept")
    return WebSocket(reader, writer, client=True), (got.get("sec-websocket-protocol") or [""])[0]


class WsRemoteCommand:
    """An exec or attach over the channel protocol; output is gathered until the server closes."""

    def __init__(self, ws: WebSocket, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.channels: dict[int, bytearray] = {STDOUT: bytearray(), STDERR: bytearray(), ERROR: bytearray()}
        self.first_message: bytes | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, protocols: tuple[str, ...] = ("v5.channel.k8s.io",)) -> WsRemoteCommand:
        return cls(*await connect(url, protocols))

    async def _read(self) -> None:
        while (message := await self.ws.receive()) is not None:
            data = message[1]
            if self.first_message is None:
                self.first_message = data
            if data and data[0] in self.channels:
                self.channels[data[0]] += data[1:]
                self._changed.set()

    async def send(self, data: bytes) -> None:
        await self.ws.send(bytes([STDIN]) + data, OP_BINARY)

    async def close_stdin(self) -> None:
        await self.ws.send(bytes([CLOSE, STDIN]))

    async def resize(self, width: int, height: int) -> None:
        await self.ws.send(bytes([RESIZE]) + json.dumps({"Width": width, "Height": height}).encode())

    async def wait_output(self, needle: bytes, channel: int = STDOUT) -> None:
        while needle not in self.channels[channel]:
            self._changed.clear()
            await self._changed.wait()

    async def finish(self) -> Result:
        """Waits for the server's close (status first), answers it and returns the output."""
        await self._reader
        self.ws.abort()
        return Result(self.protocol, bytes(self.channels[STDOUT]), bytes(self.channels[STDERR]), bytes(self.channels[ERROR]))


async def tunnel_port_forward(url: str) -> PortForward:
    """Port-forward over SPDY tunnelled in WebSocket binary messages."""
    ws, protocol = await connect(url, ("SPDY/3.1+portforward.k8s.io",))
    return PortForward(SpdyClient(WebSocketTransport(ws), protocol.split("+", 1)[-1]))


async def _main() -> int:
    parser = argparse.ArgumentParser(description="WebSocket streaming client (v5.channel.k8s.io)")
    parser.add_argument("url")
    parser.add_argument("--stdin", help="text sent on stdin, then closed with the v5 close signal")
    args = parser.parse_args()
    cmd = await WsRemoteCommand.start(args.url)
    if args.stdin is not None:
        await cmd.send(args.stdin.encode())
        await cmd.close_stdin()
    result = await cmd.finish()
    sys.stdout.buffer.write(result.stdout)
    sys.stderr.buffer.write(result.stderr)
    code = result.exit_code
    return 1 if code is None else code


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
