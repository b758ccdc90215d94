"""Port forwarding over SPDY/3.1 (`portforward.k8s.io`, CRI §3.2 item 9).

For each forwarded connection the client opens an error stream and a data stream carrying the
same `port` and `requestid` headers. Once both are here we dial the port in the sandbox and
copy both ways. When the target closes its side we half-close the data stream, then the error
stream: client-go half-closes its error stream at once and waits to read it to EOF, so without
our FIN on it the client never finishes. A dial failure is written on the error stream as text.
One connection carries any number of such pairs, concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from cri_shim.streaming.backend import PortForwardBackend
from cri_shim.streaming.requests import PortForwardRequest
from cri_shim.streaming.spdy.headers import Headers
from cri_shim.streaming.spdy.session import SpdySession, SpdyStream

log = logging.getLogger("cri_shim.streaming")

PROTOCOLS = ("portforward.k8s.io",)
COPY_CHUNK = 64 * 1024


def validate(headers: Headers) -> str | None:
    """Refuses streams without a usable port or with an unknown stream type (as the reference
    server does, before replying)."""
    port = (headers.get("port") or [""])[0]
    if not port:
        return '"port" header is required'
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"unable to parse {port!r} as a port"
    kind = (headers.get("streamtype") or [""])[0]
    if kind not in ("error", "data"):
        return f"invalid stream type {kind!r}"
    return None


def request_id(stream: SpdyStream) -> str:
    """The pair a stream belongs to; old clients send no requestid, and open the error stream
    right before the data stream (stream ids step by 2)."""
    rid = stream.header("requestid")
    if rid:
        return rid
    return str(stream.id if stream.header("streamtype") == "error" else stream.id - 2)


@dataclass
class _Pair:
    rid: str
    error: SpdyStream | None = None
    data: SpdyStream | None = None
    timer: asyncio.Task | None = None


async def serve(session: SpdySession, request: PortForwardRequest, backend: PortForwardBackend, timeout: float) -> None:
    pending: dict[str, _Pair] = {}
    forwards: set[asyncio.Task] = set()
    try:
        while (stream := await session.next_stream()) is not None:
            rid = request_id(stream)
            pair = pending.get(rid)
            if pair is None:
                pair = pending[rid] = _Pair(rid)
                pair.timer = asyncio.create_task(_expire(pair, pending, timeout))
            kind = stream.header("streamtype")
            if getattr(pair, kind) is not None:
                log.info("duplicate port-forward stream", extra={"peer": session.peer, "request": rid, "streamtype": kind})
                await stream.reset()
                continue
            setattr(pair, kind, stream)
            if pair.error is not None and pair.data is not None:
                del pending[rid]
                assert pair.timer is not None
                pair.timer.cancel()
                task = asyncio.create_task(_forward(pair.error, pair.data, request, backend, timeout))
                forwards.add(task)
                task.add_done_callback(forwards.discard)
        # The client can open no more streams; pairs already running finish on their own.
        await asyncio.gather(*forwards, return_exceptions=True)
    finally:
        for task in [*forwards, *(p.timer for p in pending.values() if p.timer)]:
            task.cancel()
        await asyncio.gather(*forwards, return_exceptions=True)


async def _expire(pair: _Pair, pending: dict[str, _Pair], timeout: float) -> None:
    await asyncio.sleep(timeout)
    if pending.get(pair.rid) is not pair:
        return
    del pending[pair.rid]
    if pair.error is not None:
        with contextlib.suppress(ConnectionError):
            await pair.error.write(f"timed out waiting for streams of request {pair.rid}".encode())
        await pair.error.close()
    if pair.data is not None:
        await pair.data.reset()


async def _forward(error: SpdyStream, data: SpdyStream, request: PortForwardRequest, backend: PortForwardBackend, timeout: float) -> None:
    port = int(data.header("port"))
    try:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await backend.dial(request, port)
        except Exception as exc:  # any dial failure is reported to the client, not raised
            message = f"error forwarding port {port} to pod {request.pod_sandbox_id}, uid : {exc or type(exc).__name__}"
            log.info("port-forward dial failed", extra={"sandbox": request.pod_sandbox_id, "port": port, "error": str(exc)})
            with contextlib.suppress(ConnectionError):
                await error.write(message.encode())
            return
        try:
            await splice(data, reader, writer)
        finally:
            writer.close()
    finally:
        await data.close()
        await error.close()


async def splice(data: SpdyStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies both ways until the target closes its side (or either end breaks); the client's
    FIN on the data stream half-closes the target connection."""

    async def upstream() -> None:
        while chunk := await data.read(COPY_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    up = asyncio.create_task(upstream())
    try:
        while chunk := await reader.read(COPY_CHUNK):
            await data.write(chunk)
    except (ConnectionError, OSError):
        pass
    finally:
        if not up.done():
            up.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await up
