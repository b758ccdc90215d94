"""The receiving end of a runtime's --console-socket: the pty master of an exec'd process.

A terminal exec runs detached under execreaper, as every exec does, so the process's exit is
seen when it happens; the runtime (runc or crun alike) makes the container's pty, sends its
master here over a unix socket (SCM_RIGHTS) and exits. The daemon then holds the master: it
relays the client's stream to and from it and sets the window size on it directly, which the
kernel signals to the process (SIGWINCH) whichever runtime made it.

The socket is made in the container's bundle directory (root's, 0700), bound through
/proc/self/fd/<dir> and named to the runtime by its bare name, with the runtime started in
that directory: a bundle path can be longer than a socket address holds (108 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable
from pathlib import Path

from cri_shim.runtime import fdwait

# What the runtime sends beside the fd: the pty's name.
MESSAGE_MAX = 4096


class ConsoleSocket:
    """A listening socket in a directory for one exec's pty master; removed on close."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._sock.bind(f"/proc/self/fd/{dir_fd}/{name}")
        except OSError:
            self._sock.close()
            raise
        finally:
            os.close(dir_fd)
        self._sock.listen(1)
        self._sock.setblocking(False)

    async def receive(self, runtime_done: Awaitable[object]) -> int | None:
        """The pty master the runtime sends, or None when runtime_done finishes first without
        one having been sent (the runtime failed before making the terminal)."""
        loop = asyncio.get_running_loop()
        accept = asyncio.ensure_future(loop.sock_accept(self._sock))
        done = asyncio.ensure_future(runtime_done)
        try:
            await asyncio.wait([accept, done], return_when=asyncio.FIRST_COMPLETED)
            if not accept.done():
                accept.cancel()
                try:  # sent just before it ended: the connection waits in the backlog
                    conn, _ = self._sock.accept()
                except BlockingIOError:
                    return None
            else:
                conn, _ = accept.result()
        finally:
            for task in (accept, done):
                if not task.done():
                    task.cancel()
        with conn:
            conn.setblocking(False)
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(conn, MESSAGE_MAX, 1)
                    break
                except BlockingIOError:
                    await fdwait.readable(conn.fileno())
        if not fds:
            return None
        os.set_inheritable(fds[0], False)
        return fds[0]

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / self.name).unlink()

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
