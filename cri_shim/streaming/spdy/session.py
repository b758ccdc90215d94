"""The server side of one SPDY/3.1 connection, on asyncio.

What Go's moby/spdystream client needs from us: a SYN_REPLY for each SYN_STREAM it opens (it
waits for one before opening the next), an echo of each PING, DATA frames with FIN to half-close,
RST_STREAM to refuse, GOAWAY before we close. It never sends WINDOW_UPDATE, so SPDY flow control
is not enforced; instead a stream whose reader falls behind stops the frame loop (bounded
buffers), which is what spdystream itself does. Malformed input ends the connection with a
GOAWAY(PROTOCOL_ERROR); it never escapes as an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from cri_shim.streaming.buffer import InboundBuffer
from cri_shim.streaming.spdy import frames as f
from cri_shim.streaming.spdy.headers import Headers
from cri_shim.streaming.transport import Transport, linger

log = logging.getLogger("cri_shim.streaming")

# Streams open at once on one connection; more are refused.
MAX_STREAMS = 1000
class SpdyStream:
    """One stream the client opened. read() returns b"" at the client's FIN, at RST_STREAM
    and when the connection ends; write() raises ConnectionError once the stream cannot send."""

    def __init__(self, session: SpdySession, stream_id: int, headers: Headers) -> None:
        self.id = stream_id
        self.headers = headers
        self._session = session
        self._inbound = InboundBuffer()
        self.local_closed = False
        self.was_reset = False

    @property
    def remote_closed(self) -> bool:
        return self._inbound.eof

    def header(self, name: str) -> str:
        """The first value of a header, "" when absent (names are lower case on the wire)."""
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    async def read(self, n: int = f.DATA_PIECE) -> bytes:
        return await self._inbound.read(n)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), f.DATA_PIECE):
            if self.local_closed or self.was_reset or self._session.closed:
                raise ConnectionResetError(f"stream {self.id} is closed")
            await self._session.send(f.Data(self.id, bytes(view[start : start + f.DATA_PIECE])))

    async def close(self) -> None:
        """Half-closes our side with an empty DATA frame carrying FIN; idempotent."""
        if self.local_closed or self.was_reset:
            return
        self.local_closed = True
        with contextlib.suppress(ConnectionError):
            await self._session.send(f.Data(self.id, b"", fin=True))
        self._session.forget_if_done(self)

    async def reset(self, status: int = f.CANCEL) -> None:
        if self.was_reset:
            return
        self._on_reset()
        with contextlib.suppress(ConnectionError):
            await self._session.send(f.RstStream(self.id, status))

    async def _feed(self, data: bytes) -> None:
        if self._session.draining:
            return
        await self._inbound.feed(data)

    def _on_remote_fin(self) -> None:
        self._inbound.close()
        self._session.forget_if_done(self)

    def _on_reset(self) -> None:
        self.was_reset = self.local_closed = True
        self._inbound.discard()
        self._session.forget_if_done(self)


Validator = Callable[[Headers], str | None]


class SpdySession:
    """Frame loop, stream table and writer of one connection.

    `validate(headers)` decides on each new stream: None accepts it (SYN_REPLY, then it is
    handed out by next_stream()), a message refuses it with RST_STREAM.
    """

    def __init__(self, transport: Transport, validate: Validator, idle_timeout: float, peer: str = "") -> None:
        self._transport = transport
        self._validate = validate
        self._idle_timeout = idle_timeout
        self.peer = peer
        self._encoder = f.FrameEncoder()
        self._write_lock = asyncio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._last_stream_id = 0
        self._last_activity = time.monotonic()
        self.closed = False
        # Set once the handler is done: client data is read and dropped until the client closes.
        self.draining = False
        self.goaway_received = False
        self.done = asyncio.Event()

    async def serve(self, handler: Callable[[SpdySession], Awaitable[None]]) -> None:
        """Runs the frame loop and `handler` together; then says GOAWAY, half-closes and waits
        (briefly) for the client to close before dropping the connection."""
        reader = asyncio.create_task(self._read_loop())
        watchdog = asyncio.create_task(self._idle_watchdog())
        try:
            await handler(self)
        finally:
            self.draining = True
            for stream in list(self._streams.values()):
                stream._inbound.discard()
            await self.send_goaway(f.GOAWAY_OK)
            await self._transport.finish()
            await linger(reader)
            self._end()
            self._transport.abort()
            for task in (reader, watchdog):
                task.cancel()
            await asyncio.gather(reader, watchdog, return_exceptions=True)

    async def next_stream(self) -> SpdyStream | None:
        """The next accepted stream, or None once the client can open no more."""
        if self._incoming.empty() and (self.closed or self.goaway_received):
            return None
        stream = await self._incoming.get()
        if stream is None:
            self._incoming.put_nowait(None)  # every later caller sees the end too
        return stream

    async def send(self, frame: f.Frame) -> None:
        """Encodes and writes one frame; the lock keeps the header context in wire order."""
        async with self._write_lock:
            if self.closed:
                raise ConnectionResetError("connection closed")
            data = self._encoder.encode(frame)
            try:
                await self._transport.send(data)
            except OSError as exc:
                self._end()
                raise ConnectionResetError(str(exc)) from exc
        self._last_activity = time.monotonic()

    async def send_goaway(self, status: int) -> None:
        with contextlib.suppress(ConnectionError):
            await self.send(f.GoAway(self._last_stream_id, status))

    def forget_if_done(self, stream: SpdyStream) -> None:
        if stream.was_reset or (stream.local_closed and stream.remote_closed):
            self._streams.pop(stream.id, None)

    def _end(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in list(self._streams.values()):
            stream._on_remote_fin()
        self._streams.clear()
        self._incoming.put_nowait(None)
        self.done.set()

    async def _idle_watchdog(self) -> None:
        while not self.closed:
            left = self._last_activity + self._idle_timeout - time.monotonic()
            if left <= 0:
                log.info("streaming connection idle, closing", extra={"peer": self.peer})
                self._end()
                self._transport.abort()
                return
            await asyncio.sleep(left)

    async def _read_loop(self) -> None:
        reader = f.FrameReader(self._transport)
        try:
            while not self.closed:
                frame = await reader.read()
                self._last_activity = time.monotonic()
                await self._dispatch(frame)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the client went away
        except f.FrameError as exc:
            log.warning("bad SPDY input, closing connection", extra={"peer": self.peer, "error": str(exc)})
            await self.send_goaway(f.GOAWAY_PROTOCOL_ERROR)
        finally:
            self._end()

    async def _dispatch(self, frame: f.Frame) -> None:
        if isinstance(frame, f.Data):
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                await stream._feed(frame.data)
                if frame.fin:
                    stream._on_remote_fin()
        elif isinstance(frame, f.SynStream):
            await self._open(frame)
        elif isinstance(frame, f.RstStream):
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._on_reset()
        elif isinstance(frame, f.Ping):
            if frame.ping_id & 1:  # odd ids are the client's; even ones would be echoes of ours
                with contextlib.suppress(ConnectionError):
                    await self.send(frame)
        elif isinstance(frame, f.GoAway):
            self.goaway_received = True
            self._incoming.put_nowait(None)
        elif isinstance(frame, f.HeadersFrame) and frame.fin:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._on_remote_fin()
        # SETTINGS, WINDOW_UPDATE, SYN_REPLY (we open no streams) and other HEADERS: nothing to do.

    async def _open(self, frame: f.SynStream) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_stream_id:
            await self._refuse(sid, f.PROTOCOL_ERROR, "stream id out of order")
            return
        self._last_stream_id = sid
        if self.goaway_received:
            await self._refuse(sid, f.REFUSED_STREAM, "connection going away")
            return
        if len(self._streams) >= MAX_STREAMS:
            await self._refuse(sid, f.REFUSED_STREAM, "too many streams")
            return
        problem = self._validate(frame.headers)
        if problem is not None:
            await self._refuse(sid, f.REFUSED_STREAM, problem)
            return
        stream = SpdyStream(self, sid, frame.headers)
        self._streams[sid] = stream
        try:
            await self.send(f.SynReply(sid))
        except ConnectionError:
            return
        if frame.unidirectional:  # the client will not read it
            stream.local_closed = True
        if frame.fin:
            stream._on_remote_fin()
        self._incoming.put_nowait(stream)

    async def _refuse(self, stream_id: int, status: int, why: str) -> None:
        log.info("refusing stream", extra={"peer": self.peer, "stream": stream_id, "reason": why})
        with contextlib.suppress(ConnectionError):
            await self.send(f.RstStream(stream_id, status))
