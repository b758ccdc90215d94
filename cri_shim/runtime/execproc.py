"""Exec'd processes whose exit is seen when it happens, not when their pipes close.

asyncio's Process.wait() (and communicate()) return once the process has exited AND every pipe
to it is closed. A background child the exec'd command leaves behind (`sleep 1000 &`) inherits
those pipes and holds them for as long as it runs; so does a foreground `runc exec`, which copies
the output through pipes of its own until they reach EOF. An exec waited for that way lasts as
long as the child: a probe runs into its timeout and loses its output.

So every exec'd process runs under execreaper (detached runc, the process reaped by a
subreaper that exits with its status: reaped_command), and its exit is taken from the
protocol's process_exited (ExecProcess.exit). The caller then reads what the pipes still hold
for a bounded grace and closes our ends with close(); the background child runs on in the
container, as under containerd and CRI-O.

No exec'd process is handed the host's /dev/null: crun (1.8.1 at least) gives an exec's
non-terminal stdio to the exec's user, /dev/null included, which would let any container user
change the mode of the host's /dev/null. An input the exec does not get is a pipe closed at
once (it reads EOF, as from /dev/null), an output nobody wants a pipe read and dropped.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from cri_shim.runtime import execreaper
from cri_shim.runtime.runc import Runc

# The StreamReader buffer asyncio's create_subprocess_exec uses.
STREAM_LIMIT = 2**16


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The streams protocol of create_subprocess_exec, plus a future done at the process's exit."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=STREAM_LIMIT, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class ExecProcess(asyncio.subprocess.Process):
    """asyncio's Process with exit() (the exit, pipes open or not) and close() (our pipe ends)."""

    _protocol: _Protocol

    async def exit(self) -> int:
        """The return code once the process has exited; cancelling the wait leaves the process be."""
        await asyncio.shield(self._protocol.exited)
        assert self.returncode is not None
        return self.returncode

    def close(self) -> None:
        """Closes our ends of the pipes (readers see EOF after what they already hold), which
        asyncio otherwise keeps open while anyone else holds the other ends; kills the process
        if it still runs."""
        self._transport.close()


def reaped_command(runc: Runc, container_id: str, process_file: Path, pid_file: Path, console_socket: str = "") -> list[str]:
    """argv that runs the process of process_file in the container, exiting with its status as
    soon as it exits (execreaper around a detached `runc exec`; a terminal's master goes to
    console_socket)."""
    return [sys.executable, "-I", "-S", execreaper.__file__, str(pid_file),
            *runc.exec_command(container_id, process_file, pid_file, console_socket)]


async def spawn(argv: list[str], stdin: bool = False, **options: Any) -> ExecProcess:
    """Starts argv as create_subprocess_exec does, with stdout and stderr pipes; stdin a pipe
    too, closed at once unless stdin is True (the caller feeds proc.stdin then)."""
    loop = asyncio.get_running_loop()
    pipe = asyncio.subprocess.PIPE
    transport, protocol = await loop.subprocess_exec(lambda: _Protocol(loop), *argv, stdin=pipe, stdout=pipe, stderr=pipe,
                                                     **options)
    proc = ExecProcess(transport, protocol, loop)
    if not stdin:
        assert proc.stdin is not None
        proc.stdin.close()
    return proc
