"""Exec and attach over SPDY/3.1 (remote command protocols v1-v5, CRI §3.2 items 4-6).

The client opens one stream per channel, typed by the `streamtype` header, in the order error,
stdin, stdout, stderr, resize; which ones it opens follows from the cached request. Once all
have arrived the command runs; when it ends, stdout and stderr are half-closed first, then the
status goes on the error stream and that is half-closed, and only then does the connection say
GOAWAY (client-go returns once stdout/stderr reach EOF and the error stream has been read).
"""

from __future__ import annotations

import asyncio
import logging

from cri_shim.streaming import command, status
from cri_shim.streaming.backend import Backends, StreamIO
from cri_shim.streaming.requests import AttachRequest, ExecRequest
from cri_shim.streaming.spdy.session import SpdySession, SpdyStream

log = logging.getLogger("cri_shim.streaming")

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
# v3 introduced the resize stream; v5 over SPDY is v4 (its close signal is WebSocket-only).
RESIZE_PROTOCOLS = PROTOCOLS[:3]
STREAM_TYPE = "streamtype"


def expected_streams(request: ExecRequest | AttachRequest, protocol: str) -> set[str]:
    wanted = {"error"}
    for name in ("stdin", "stdout", "stderr"):
        if getattr(request, name) and not (name == "stderr" and request.tty):
            wanted.add(name)
    if request.tty and protocol in RESIZE_PROTOCOLS:
        wanted.add("resize")
    return wanted


async def collect(session: SpdySession, wanted: set[str], timeout: float) -> dict[str, SpdyStream] | None:
    """The client's streams by type, or None if they do not all arrive within the timeout.
    Streams of unknown type are not counted; a second stream of a type is reset."""
    streams: dict[str, SpdyStream] = {}
    try:
        async with asyncio.timeout(timeout):
            while not wanted <= streams.keys():
                stream = await session.next_stream()
                if stream is None:
                    return None
                kind = stream.header(STREAM_TYPE)
                if kind not in wanted or kind in streams:
                    log.info("unexpected stream", extra={"peer": session.peer, "streamtype": kind})
                    await stream.reset()
                    continue
                streams[kind] = stream
    except TimeoutError:
        log.warning("timed out waiting for client to create streams", extra={"peer": session.peer, "have": sorted(streams)})
        return None
    return streams


async def serve(
    session: SpdySession, protocol: str, request: ExecRequest | AttachRequest, backends: Backends, timeout: float
) -> None:
    streams = await collect(session, expected_streams(request, protocol), timeout)
    if streams is None:
        return
    stdin = streams.get("stdin")
    if stdin is not None and protocol == "channel.k8s.io":
        await stdin.close()  # v1 servers half-close stdin at once; v1 clients expect it
    io = StreamIO(request.tty, stdin, streams.get("stdout"), streams.get("stderr"), disconnected=session.done)
    resize = streams.get("resize")
    resizer = asyncio.create_task(command.pump_resizes(resize, io)) if resize else None
    if resize is None:
        io.resize_queue.put_nowait(None)
    try:
        result = await command.run(request, backends, io)
    finally:
        await command.stop(resizer)
    for name in ("stdout", "stderr"):
        if name in streams:
            await streams[name].close()
    error = streams["error"]
    payload = status.encode(result, protocol)
    if payload:
        try:
            await error.write(payload)
        except ConnectionError:
            return
    await error.close()
