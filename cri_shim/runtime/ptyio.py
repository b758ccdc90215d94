"""A streaming exec's terminal as the daemon holds it: the master of the container's pty.

The runtime makes the pty inside the container and sends its master (runtime/console.py); the
daemon reads the process's output from it, writes the client's input to it (the client's stdin
EOF becoming ^D, end of input on a terminal in canonical mode) and sets the window size on it.
"""

from __future__ import annotations

import errno
import os

from cri_shim.runtime import fdwait

# End of input on a terminal in canonical mode: what the client's stdin EOF becomes (^D).
EOT = b"\x04"
CHUNK = 65536


class PtyMaster:
    """A pty master read and written on the event loop; owns the fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    async def read(self) -> bytes:
        """The next output; b"" once every slave fd is closed (the kernel's EIO)."""
        while True:
            try:
                return os.read(self.fd, CHUNK)
            except BlockingIOError:
                await fdwait.readable(self.fd)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await fdwait.writable(self.fd)

    def close(self) -> None:
        os.close(self.fd)
