"""Streaming backends on plain host processes and TCP, standing in for containers.

HostExec runs request.cmd as a host process, on pipes or on a pty (tty requests, with resizes
applied by TIOCSWINSZ); HostAttach attaches to long-running HostContainer processes whose
output is fanned out to every attacher; TcpDial dials 127.0.0.1. They implement the backend
interfaces in cri_shim.streaming.backend exactly as the runtime will, so the server is tested
end to end on real processes, ptys and sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
from collections.abc import Awaitable

from cri_shim.streaming.backend import OutputStream, StreamIO, TerminalSize
from cri_shim.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from cri_shim.streaming.terminal import set_window_size

CHUNK = 65536


def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kills a command nobody waits for any more (client gone, server closing)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


async def _copy_out(source: asyncio.StreamReader, sink: OutputStream) -> None:
    try:
        while chunk := await source.read(CHUNK):
            await sink.write(chunk)
    except ConnectionError:
        pass  # the client left; the process runs on until it exits or is killed


class _Pty:
    """The master side of a pty, read through the event loop."""

    def __init__(self, master: int) -> None:
        self.fd = master
        os.set_blocking(master, False)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, CHUNK)
        except OSError:  # EIO once every slave fd is closed: end of output
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.fd)
        self._queue.put_nowait(data)

    async def read(self) -> bytes:
        return await self._queue.get()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                await asyncio.sleep(0.01)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


class HostExec:
    """ExecBackend on host processes. `resized` records every size applied to a pty, and
    `applied` is set on each, so tests can order input after a resize without sleeping;
    `exits` records exit codes as commands end."""

    def __init__(self) -> None:
        self.resized: list[TerminalSize] = []
        self.applied = asyncio.Event()
        self.started = 0
        self.exits: list[int] = []
        self.exited = asyncio.Event()

    async def exec(self, request: ExecRequest, io: StreamIO) -> int:
        self.started += 1
        code = await (self._exec_tty(request, io) if request.tty else self._exec_pipes(request, io))
        self.exits.append(code)
        self.exited.set()
        return code

    async def _exec_pipes(self, request: ExecRequest, io: StreamIO) -> int:
        pipe = asyncio.subprocess.PIPE
        dev_null = asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            *request.cmd,
            stdin=pipe if io.stdin else dev_null,
            stdout=pipe if io.stdout else dev_null,
            stderr=pipe if io.stderr else dev_null,
        )
        feeder = asyncio.create_task(self._feed(io, proc.stdin)) if io.stdin and proc.stdin else None
        watcher = asyncio.create_task(self._kill_on_disconnect(io, proc))
        try:
            copies: list[Awaitable[None]] = []
            if io.stdout and proc.stdout:
                copies.append(_copy_out(proc.stdout, io.stdout))
            if io.stderr and proc.stderr:
                copies.append(_copy_out(proc.stderr, io.stderr))
            await asyncio.gather(*copies)
            return _exit_code(await proc.wait())
        finally:
            for task in (feeder, watcher):
                if task:
                    task.cancel()
            _kill(proc)

    @staticmethod
    async def _feed(io: StreamIO, stdin: asyncio.StreamWriter) -> None:
        assert io.stdin is not None
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            while data := await io.stdin.read():
                stdin.write(data)
                await stdin.drain()
        stdin.close()

    @staticmethod
    async def _kill_on_disconnect(io: StreamIO, proc: asyncio.subprocess.Process) -> None:
        await io.disconnected.wait()
        _kill(proc)

    async def _exec_tty(self, request: ExecRequest, io: StreamIO) -> int:
        master, slave = pty.openpty()
        term = _Pty(master)
        try:
            # setsid --ctty: the pty becomes the controlling terminal, as in a container.
            proc = await asyncio.create_subprocess_exec("setsid", "--ctty", *request.cmd, stdin=slave, stdout=slave, stderr=slave)
        finally:
            os.close(slave)
        tasks = [asyncio.create_task(self._apply_resizes(io, master)), asyncio.create_task(self._kill_on_disconnect(io, proc))]
        if io.stdin:
            tasks.append(asyncio.create_task(self._feed_tty(io, term)))
        try:
            while data := await term.read():
                if io.stdout:
                    with contextlib.suppress(ConnectionError):
                        await io.stdout.write(data)
            return _exit_code(await proc.wait())
        finally:
            for task in tasks:
                task.cancel()
            term.close()
            _kill(proc)

    async def _apply_resizes(self, io: StreamIO, fd: int) -> None:
        async for size in io.resizes():
            set_window_size(fd, size)
            self.resized.append(size)
            self.applied.set()

    @staticmethod
    async def _feed_tty(io: StreamIO, term: _Pty) -> None:
        assert io.stdin is not None
        while data := await io.stdin.read():
            await term.write(data)
        await term.write(b"\x04")  # end of input on a terminal is ^D


class HostContainer:
    """A long-running host process standing in for a container with open stdin: its output is
    fanned out to every attacher (nothing is replayed), stdin is shared."""

    def __init__(self, cmd: list[str], stdin_once: bool = False) -> None:
        self.cmd = cmd
        self.stdin_once = stdin_once
        self.proc: asyncio.subprocess.Process | None = None
        self._listeners: set[asyncio.Queue[tuple[int, bytes] | None]] = set()
        self._pumps: list[asyncio.Task] = []
        self.exited = asyncio.Event()

    async def start(self) -> None:
        pipe = asyncio.subprocess.PIPE
        self.proc = await asyncio.create_subprocess_exec(*self.cmd, stdin=pipe, stdout=pipe, stderr=pipe)
        assert self.proc.stdout and self.proc.stderr
        self._pumps = [asyncio.create_task(self._pump(1, self.proc.stdout)), asyncio.create_task(self._pump(2, self.proc.stderr))]
        asyncio.create_task(self._reap())

    async def _pump(self, channel: int, source: asyncio.StreamReader) -> None:
        while chunk := await source.read(CHUNK):
            for queue in self._listeners:
                queue.put_nowait((channel, chunk))

    async def _reap(self) -> None:
        await asyncio.gather(*self._pumps)
        assert self.proc is not None
        await self.proc.wait()
        self.exited.set()
        for queue in self._listeners:
            queue.put_nowait(None)

    def listen(self) -> asyncio.Queue[tuple[int, bytes] | None]:
        queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        if self.exited.is_set():
            queue.put_nowait(None)
        else:
            self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[tuple[int, bytes] | None]) -> None:
        self._listeners.discard(queue)

    async def write_stdin(self, data: bytes) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    def close_stdin(self) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.close()

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
        await self.exited.wait()


class HostAttach:
    """AttachBackend over HostContainers by id."""

    def __init__(self) -> None:
        self.containers: dict[str, HostContainer] = {}

    async def attach(self, request: AttachRequest, io: StreamIO) -> None:
        container = self.containers.get(request.container_id)
        if container is None:
            raise LookupError(f"container {request.container_id} not found")
        queue = container.listen()
        feeder = asyncio.create_task(self._feed(container, io)) if io.stdin else None
        gone = asyncio.create_task(io.disconnected.wait())
        try:
            while True:
                get = asyncio.create_task(queue.get())
                await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    return  # the client left first
                if (item := get.result()) is None:
                    return  # the container's output closed
                channel, data = item
                sink = io.stdout if channel == 1 or io.tty else io.stderr
                if sink is not None:
                    try:
                        await sink.write(data)
                    except ConnectionError:
                        return  # this attacher left; the container and the others go on
        finally:
            container.unlisten(queue)
            gone.cancel()
            if feeder:
                feeder.cancel()

    @staticmethod
    async def _feed(container: HostContainer, io: StreamIO) -> None:
        assert io.stdin is not None
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            while data := await io.stdin.read():
                await container.write_stdin(data)
        if container.stdin_once:
            container.close_stdin()


class TcpDial:
    """PortForwardBackend dialing 127.0.0.1; records what it dialed."""

    def __init__(self) -> None:
        self.dialed: list[tuple[str, int]] = []

    async def dial(self, request: PortForwardRequest, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.dialed.append((request.pod_sandbox_id, port))
        return await asyncio.open_connection("127.0.0.1", port)
