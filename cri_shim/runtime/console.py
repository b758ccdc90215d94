"""Receiving a terminal from runc: the --console-socket protocol.

`runc exec --tty --console-socket PATH` (and `runc create` with a terminal) connects to a
unix socket at PATH and sends the pty master as SCM_RIGHTS ancillary data. ConsoleSocket
listens on such a socket and hands the received master fd to the caller (the streaming
server, for `kubectl exec -t`).
"""

from __future__ import annotations

import array
import asyncio
import os
import socket
import tempfile
from pathlib import Path

from cri_shim.runtime import fdwait


class ConsoleSocket:
    """A one-shot listening socket that receives one pty master fd."""

    def __init__(self, directory: Path) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="console-", dir=directory))
        self.path = self._dir / "sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(1)
        self._sock.setblocking(False)

    async def receive(self) -> int:
        """The pty master fd sent by runc (the caller owns and closes it)."""
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._sock)
        fds = array.array("i")
        with conn:
            while not fds:
                await fdwait.readable(conn.fileno())
                msg, anc, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                if not msg and not fds:
                    raise OSError("runc closed the console socket without sending a terminal")
        for extra in fds[1:]:
            os.close(extra)
        return fds[0]

    def close(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)
        self._dir.rmdir()
