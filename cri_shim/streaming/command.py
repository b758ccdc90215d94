"""Running an exec or attach against its backend and turning the outcome into a status; the
part of a remote command both transports (SPDY, WebSocket) share."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cri_shim.streaming import status
from cri_shim.streaming.backend import Backends, InputStream, StreamIO
from cri_shim.streaming.requests import ExecRequest, StreamRequest
from cri_shim.streaming.terminal import ResizeDecoder, ResizeError

log = logging.getLogger("cri_shim.streaming")


async def run(request: StreamRequest, backends: Backends, io: StreamIO) -> dict:
    """Runs the command (exec) or joins the container (attach); the status to report."""
    try:
        if isinstance(request, ExecRequest):
            if backends.exec is None:
                raise RuntimeError("exec is not supported by this runtime")
            code = await backends.exec.exec(request, io)
            return status.for_result(code, request.cmd)
        if backends.attach is None:
            raise RuntimeError("attach is not supported by this runtime")
        await backends.attach.attach(request, io)
        return status.success()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the backend's failure is the client's error message
        log.warning("remote command failed", extra={"container": request.container_id, "error": str(exc)})
        kind = "executing command" if isinstance(request, ExecRequest) else "attaching to container"
        return status.internal_error(f"error {kind}: {exc}")


async def pump_resizes(source: InputStream, io: StreamIO) -> None:
    """Feeds sizes from a resize stream into io until it ends or carries garbage."""
    decoder = ResizeDecoder()
    try:
        while data := await source.read():
            for size in decoder.feed(data):
                io.resize_queue.put_nowait(size)
    except ResizeError as exc:
        log.info("ignoring the rest of a resize stream", extra={"error": str(exc)})
    finally:
        io.resize_queue.put_nowait(None)


async def stop(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
