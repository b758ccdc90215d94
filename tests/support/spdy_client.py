"""A SPDY/3.1 client that drives the streaming server the way Go's client-go + moby/spdystream
do: POST upgrade offering v5..v1, streams opened one at a time in the order error, stdin,
stdout, stderr, resize, each waiting for its SYN_REPLY, PINGs, stdin half-closed with FIN,
status read from the error stream to EOF. Port-forward is in tests.support.portforward_client.

It reuses cri_shim's frame codec (as client-go and the Go server share spdystream's framer);
the session logic here is its own. Usable from a plain script:

    python -m tests.support.spdy_client exec URL [--tty] [--stdin TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from cri_shim.streaming.buffer import InboundBuffer
from cri_shim.streaming.spdy import frames as f
from cri_shim.streaming.transport import StreamTransport, Transport
from tests.support.upgrade import UpgradeFailed, upgrade

REMOTECOMMAND_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
REPLY_TIMEOUT = 30.0
COPY_BUFFER = 32 * 1024

__all__ = ["SpdyClient", "RemoteCommand", "UpgradeFailed", "connect", "run"]


class StreamRefused(Exception):
    """The server answered a SYN_STREAM with RST_STREAM."""


class ClientStream:
    def __init__(self, conn: SpdyClient, stream_id: int) -> None:
        self.id = stream_id
        self._conn = conn
        self.inbound = InboundBuffer(limit=1 << 30)  # tests read everything they are sent
        self.replied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reset_status: int | None = None

    async def read(self, n: int = 65536) -> bytes:
        return await self.inbound.read(n)

    async def read_all(self) -> bytes:
        out = bytearray()
        while chunk := await self.read():
            out += chunk
        return bytes(out)

    async def write(self, data: bytes) -> None:
        """One DATA frame per 32 KiB, as Go's io.Copy into a spdystream Stream writes."""
        for start in range(0, len(data), COPY_BUFFER):
            await self._conn.send(f.Data(self.id, data[start : start + COPY_BUFFER]))

    async def close(self) -> None:
        """Half-close: an empty DATA frame with FIN, as spdystream's Stream.Close()."""
        await self._conn.send(f.Data(self.id, b"", fin=True))

    async def reset(self) -> None:
        await self._conn.send(f.RstStream(self.id, f.CANCEL))


class SpdyClient:
    """The client end of one SPDY/3.1 connection."""

    def __init__(self, transport: Transport, protocol: str = "", writer: asyncio.StreamWriter | None = None) -> None:
        self.transport = transport
        self._writer = writer
        self.protocol = protocol
        self._encoder = f.FrameEncoder()
        self._lock = asyncio.Lock()
        self._streams: dict[int, ClientStream] = {}
        self._next_id = 1
        self._next_ping = 1
        self._pings: dict[int, asyncio.Future[None]] = {}
        self.goaway: f.GoAway | None = None
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read_loop())

    async def send(self, frame: f.Frame) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("connection closed")
        async with self._lock:
            await self.transport.send(self._encoder.encode(frame))

    async def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the wire (malformed-input tests)."""
        async with self._lock:
            await self.transport.send(data)

    async def open_stream(self, headers: dict[str, str], timeout: float = REPLY_TIMEOUT) -> ClientStream:
        stream = ClientStream(self, self._next_id)
        self._streams[stream.id] = stream
        self._next_id += 2
        await self.send(f.SynStream(stream.id, {k: [v] for k, v in headers.items()}))
        async with asyncio.timeout(timeout):
            await stream.replied
        return stream

    async def ping(self) -> None:
        ping_id = self._next_ping
        self._next_ping += 2
        waiter = self._pings[ping_id] = asyncio.get_running_loop().create_future()
        await self.send(f.Ping(ping_id))
        await waiter

    async def close(self) -> None:
        """GOAWAY then close, as spdystream's Connection.Close() after resetting streams."""
        with contextlib.suppress(ConnectionError, OSError):
            await self.send(f.GoAway(0))
            await self.transport.finish()
        self.transport.abort()
        with contextlib.suppress(asyncio.CancelledError):
            self._reader.cancel()
            await self._reader
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()

    async def _read_loop(self) -> None:
        reader = f.FrameReader(self.transport)
        try:
            while True:
                frame = await reader.read()
                if isinstance(frame, f.SynReply):
                    stream = self._streams.get(frame.stream_id)
                    if stream and not stream.replied.done():
                        stream.replied.set_result(None)
                elif isinstance(frame, f.Data):
                    stream = self._streams.get(frame.stream_id)
                    if stream:
                        await stream.inbound.feed(frame.data)
                        if frame.fin:
                            stream.inbound.close()
                elif isinstance(frame, f.RstStream):
                    stream = self._streams.get(frame.stream_id)
                    if stream:
                        stream.reset_status = frame.status
                        stream.inbound.close()
                        if not stream.replied.done():
                            stream.replied.set_exception(StreamRefused(f"stream {stream.id} reset ({frame.status})"))
                elif isinstance(frame, f.Ping):
                    if frame.ping_id in self._pings:
                        self._pings.pop(frame.ping_id).set_result(None)
                elif isinstance(frame, f.GoAway):
                    self.goaway = frame
        except (asyncio.IncompleteReadError, ConnectionError, OSError, f.FrameError):
            pass
        finally:
            for stream in self._streams.values():
                stream.inbound.close()
                if not stream.replied.done():
                    stream.replied.set_exception(ConnectionResetError("connection closed"))
            for waiter in self._pings.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionResetError("connection closed"))
            self.closed.set()


async def connect(url: str, protocols: tuple[str, ...] = REMOTECOMMAND_PROTOCOLS, method: str = "POST") -> SpdyClient:
    """Upgrades to SPDY/3.1; the negotiated protocol is in .protocol ("" if none was sent)."""
    headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
    headers += [("X-Stream-Protocol-Version", p) for p in protocols]
    reader, writer, got = await upgrade(url, method, headers)
    return SpdyClient(StreamTransport(reader, writer), (got.get("x-stream-protocol-version") or [""])[0], writer)


@dataclass
class Result:
    protocol: str
    stdout: bytes = b""
    stderr: bytes = b""
    error: bytes = b""

    @property
    def status(self) -> dict[str, Any] | None:
        """The v4/v5 status object; None when the error stream was empty."""
        return json.loads(self.error) if self.error else None

    @property
    def exit_code(self) -> int | None:
        """Decoded as client-go does: 0 on Success or empty, the ExitCode cause on failure."""
        status = self.status
        if status is None or status["status"] == "Success":
            return 0
        if status.get("reason") != "NonZeroExitCode":
            return None
        causes = status["details"]["causes"]
        return next(int(c["message"]) for c in causes if c["reason"] == "ExitCode")


@dataclass
class RemoteCommand:
    """An exec or attach in progress: stdin to send, output gathered as it arrives."""

    conn: SpdyClient
    streams: dict[str, ClientStream]
    output: dict[str, bytearray] = field(default_factory=dict)
    _readers: list[asyncio.Task] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(
        cls, url: str, *, stdin: bool = False, stdout: bool = True, stderr: bool = True, tty: bool = False,
        protocols: tuple[str, ...] = REMOTECOMMAND_PROTOCOLS,
    ) -> RemoteCommand:
        conn = await connect(url, protocols)
        wanted = ["error"] + [n for n, on in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr and not tty)) if on]
        if tty and conn.protocol in REMOTECOMMAND_PROTOCOLS[:3]:
            wanted.append("resize")
        streams = {}
        for kind in wanted:
            streams[kind] = await conn.open_stream({"streamtype": kind})
        cmd = cls(conn, streams)
        for kind in ("stdout", "stderr", "error"):
            if kind in streams:
                cmd.output[kind] = bytearray()
                cmd._readers.append(asyncio.create_task(cmd._gather(kind)))
        return cmd

    async def _gather(self, kind: str) -> None:
        while chunk := await self.streams[kind].read():
            self.output[kind] += chunk
            self._changed.set()

    async def send(self, data: bytes) -> None:
        await self.streams["stdin"].write(data)

    async def close_stdin(self) -> None:
        await self.streams["stdin"].close()

    async def resize(self, width: int, height: int) -> None:
        await self.streams["resize"].write(json.dumps({"Width": width, "Height": height}).encode() + b"\n")

    async def wait_output(self, needle: bytes, kind: str = "stdout") -> None:
        """Waits until the stream has carried `needle` (tests wrap this in their own timeout)."""
        while needle not in self.output[kind]:
            self._changed.clear()
            await self._changed.wait()

    async def finish(self) -> Result:
        """Waits for stdout/stderr and then the error stream to reach EOF, closes, returns all."""
        await asyncio.gather(*self._readers)
        await self.conn.close()
        return Result(self.conn.protocol, *(bytes(self.output.get(k, b"")) for k in ("stdout", "stderr", "error")))


async def run(url: str, stdin: bytes | None = None, **kwargs: Any) -> Result:
    """Runs a remote command to the end: stdin (if given) is sent and half-closed at once."""
    cmd = await RemoteCommand.start(url, stdin=stdin is not None, **kwargs)
    if stdin is not None:
        if stdin:
            await cmd.send(stdin)
        await cmd.close_stdin()
    return await cmd.finish()


async def _main() -> int:
    parser = argparse.ArgumentParser(description="SPDY/3.1 streaming client")
    parser.add_argument("kind", choices=["exec", "attach"])
    parser.add_argument("url")
    parser.add_argument("--tty", action="store_true")
    parser.add_argument("--stdin", help="text sent on stdin, then half-closed")
    args = parser.parse_args()
    stdin = args.stdin.encode() if args.stdin is not None else None
    result = await run(args.url, stdin, tty=args.tty)
    sys.stdout.buffer.write(result.stdout)
    sys.stderr.buffer.write(result.stderr)
    code = result.exit_code
    print(f"protocol={result.protocol} status={result.error.decode()!r}", file=sys.stderr)
    return 1 if code is None else code


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
