"""Streaming exec: `runc exec` of a command in a running container, wired to a client.

The process is the one ExecSync runs (execsync.process_files: the container's user, env, cwd
and capabilities), run as for ExecSync under execreaper, which exits with its status. Without a
terminal it gets our pipes: stdin if the client sends it (its EOF closes the pipe), stdout if
asked for, and stderr always, since the runtime's own errors come there too. With a terminal the
runtime sends the master of the pty it made in the container (console.py) and the daemon relays
the client's stream to and from it itself: the client's stdin EOF becomes ^D and each resize is
set on the master, which the kernel signals to the process, the same under runc and crun.

When the client leaves first, the process is killed through runc's pid file (execsync.kill_exec);
nobody would see the rest of its output. When the process exits (its parent's exit, execproc), the
rest of its output is read for the drain timeout, as for ExecSync, and then the stream ends
with its exit code, even while a background child it left holds the pipes (our ends are closed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from cri_shim.runtime import execsync, ptyio
from cri_shim.runtime.console import ConsoleSocket
from cri_shim.runtime.execproc import ExecProcess, reaped_command, spawn
from cri_shim.runtime.runc import Runc
from cri_shim.streaming.backend import InputStream, OutputStream, StreamIO
from cri_shim.streaming.terminal import set_window_size

CHUNK = 65536
# Past the drain timeout, how often an output still being delivered to a slow client is looked at.
DELIVERY_POLL = 0.05
# How much of runc's stderr is kept for the error message when it cannot start the process.
ERROR_TAIL = 4096


class _Pump:
    """Copies one output of the exec to the client until it ends. After the client stops
    receiving it keeps reading (and dropping), so the process never blocks on a full pipe or
    terminal. `keep` gets the last ERROR_TAIL bytes (runc's error message, on stderr)."""

    def __init__(self, read: Callable[[], Awaitable[bytes]], sink: OutputStream | None, keep: bytearray | None = None) -> None:
        self._read = read
        self._sink = sink
        self._keep = keep
        self.waiting = False  # blocked on the source, not on the client
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.waiting = True
            chunk = await self._read()
            self.waiting = False
            if not chunk:
                return
            if self._keep is not None:
                self._keep += chunk
                del self._keep[:-ERROR_TAIL]
            if self._sink is not None:
                try:
                    await self._sink.write(chunk)
                except ConnectionError:
                    self._sink = None


async def _drain(pumps: list[_Pump], left: asyncio.Task, grace: float | None) -> None:
    """Once the process has exited: waits for the rest of its output, to the end of every output,
    for at most grace (None: no bound), or until the client has left. Past the grace an output
    is given up once it waits on its source (a background child holds it); one still being
    written to a slow client is waited for, so that what was read is delivered whole."""
    loop = asyncio.get_running_loop()
    end = None if grace is None else loop.time() + grace
    while (pending := [p for p in pumps if not p.task.done()]) and not left.done():
        now = loop.time()
        if end is not None and now >= end and all(p.waiting for p in pending):
            return
        timeout = None if end is None else max(end - now, DELIVERY_POLL)
        await asyncio.wait([left, *(p.task for p in pending)], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)


async def _supervise(proc: ExecProcess, pid_file: Path, io: StreamIO, pumps: list[_Pump],
                     helpers: list[asyncio.Task], runc_stderr: bytearray, drain: float | None) -> int:
    """Waits for the process to exit, killing it if the client leaves first; then for the rest
    of its output. Its exit code; whatever ends this early (an error, cancellation) kills it.
    Our ends of its pipes are closed in the end, whoever else holds theirs."""
    exited = asyncio.create_task(proc.exit())
    left = asyncio.create_task(io.disconnected.wait())
    tasks = [exited, left, *helpers, *(p.task for p in pumps)]
    try:
        await asyncio.wait([exited, left], return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            await execsync.kill_exec(pid_file, proc)
        await _drain(pumps, left, drain)
        assert proc.returncode is not None
        return execsync.outcome(pid_file, proc.returncode, bytes(runc_stderr))
    finally:
        if proc.returncode is None:
            await execsync.kill_exec(pid_file, proc)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        proc.close()


async def _feed_pipe(stdin: InputStream, pipe: asyncio.StreamWriter) -> None:
    try:
        while data := await stdin.read(CHUNK):
            pipe.write(data)
            await pipe.drain()
    except ConnectionError:
        pass  # the process closed its stdin (or exited)
    finally:
        pipe.close()


async def _feed_tty(stdin: InputStream, master: ptyio.PtyMaster) -> None:
    with contextlib.suppress(OSError):  # the terminal is gone: so is the process
        while data := await stdin.read(CHUNK):
            await master.write(data)
        await master.write(ptyio.EOT)


async def _resize(io: StreamIO, master: ptyio.PtyMaster) -> None:
    async for size in io.resizes():
        set_window_size(master.fd, size)


async def _with_pipes(argv: list[str], pid_file: Path, io: StreamIO, drain: float | None) -> int:
    proc = await spawn(argv, stdin=io.stdin is not None)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None
    runc_stderr = bytearray()
    pumps = [_Pump(lambda: stderr.read(CHUNK), io.stderr, runc_stderr), _Pump(lambda: stdout.read(CHUNK), io.stdout)]
    helpers = [asyncio.create_task(_feed_pipe(io.stdin, proc.stdin))] if io.stdin and proc.stdin else []
    return await _supervise(proc, pid_file, io, pumps, helpers, runc_stderr, drain)


async def _with_terminal(runc: Runc, container_id: str, process_file: Path, pid_file: Path, io: StreamIO,
                         drain: float | None) -> int:
    bundle = pid_file.parent
    with ConsoleSocket(bundle, pid_file.with_suffix(".console").name) as console:
        argv = reaped_command(runc, container_id, process_file, pid_file, console.name)
        proc = await spawn(argv, cwd=bundle)
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None
        runc_stderr = bytearray()
        pumps = [_Pump(lambda: stderr.read(CHUNK), None, runc_stderr), _Pump(lambda: stdout.read(CHUNK), None)]
        try:
            master_fd = await console.receive(proc.exit())
        except BaseException:
            await execsync.kill_exec(pid_file, proc)
            proc.close()
            for pump in pumps:
                pump.task.cancel()
            raise
    if master_fd is None:  # the runtime failed before making the terminal: it said why on stderr
        return await _supervise(proc, pid_file, io, pumps, [], runc_stderr, drain)
    master = ptyio.PtyMaster(master_fd)
    try:
        pumps.append(_Pump(master.read, io.stdout))
        helpers = [asyncio.create_task(_resize(io, master))]
        if io.stdin is not None:
            helpers.append(asyncio.create_task(_feed_tty(io.stdin, master)))
        return await _supervise(proc, pid_file, io, pumps, helpers, runc_stderr, drain)
    finally:
        master.close()


async def run(runc: Runc, container_id: str, process_file: Path, pid_file: Path, tty: bool, io: StreamIO,
              drain: float | None) -> int:
    """Runs the process of process_file in the container wired to io; its exit code once it has
    exited and its output has been written (read for at most drain seconds after the exit; None:
    until the outputs close)."""
    if tty:
        return await _with_terminal(runc, container_id, process_file, pid_file, io, drain)
    return await _with_pipes(reaped_command(runc, container_id, process_file, pid_file), pid_file, io, drain)
