"""The host side of a streaming exec's terminal: a pty whose slave runc relays to the container's.

`runc exec --tty` accepts --console-socket only together with --detach, and a detached exec's
process is reparented away from us (to init), so its exit status would be lost. Without
--detach runc wants a terminal of its own instead: it copies between its stdin/stdout (the
slave made here) and the container's pty, exits with the process's status, and on SIGWINCH
copies this pty's size into the container's. CRI-O runs `runc exec -t` the same way.

The slave is switched to raw mode before runc starts, as runc itself would switch it (output
processing kept, so newlines still reach the client as CR LF): input written at once is then
neither echoed nor line-edited by this side of the relay, only by the container's terminal.
"""

from __future__ import annotations

import errno
import os
import termios

from cri_shim.runtime import fdwait

# End of input on a terminal in canonical mode: what the client's stdin EOF becomes (^D).
EOT = b"\x04"
CHUNK = 65536


def host_pair() -> tuple[int, int]:
    """(master, slave) of a new pty, the slave in raw mode for runc's relay."""
    master, slave = os.openpty()
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(slave)
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
               | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
    oflag |= termios.OPOST
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    termios.tcsetattr(slave, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])
    return master, slave


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
