"""Admission of streaming connections: the accept loop, the cap on open connections and the
log of accept failures.

Anyone on the host can connect to the streaming port, and tokens are only checked once the
request head is in, so nothing an unauthenticated connection costs may grow without bound. At
most `cap` connections are open at once. One arriving at the cap takes the place of the oldest
connection still sending its head (a token holder sends its head at once; a client that
dawdles or says nothing is the one to go), and when every open connection is past its head the
newcomer is reset unread. The cap itself is held under half the process's descriptors, so
that streaming never takes the ones the gRPC socket, CNI, runc and conmon need.

Accept failures (EMFILE and the like) do not spin: the loop backs off from 5 ms to 1 s as Go's
net/http does, and they are logged once an interval with a count, never a traceback each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

from cri_shim.logs import RateLimited

log = logging.getLogger("cri_shim.streaming")

# What one connection may hold open at once, as an estimate: its socket and, for an exec, runc's
# pipes or terminal and its files; a port-forward also holds a socket for each forwarded stream.
FDS_PER_CONNECTION = 8
BACKOFF_MIN = 0.005
BACKOFF_MAX = 1.0
LOG_INTERVAL = 10.0
# SO_LINGER on with a zero timeout: close() resets the connection and keeps no state behind.
_RESET = struct.pack("ii", 1, 0)

Handler = Callable[[socket.socket, str], Awaitable[None]]


def connection_cap(configured: int, open_files: int) -> int:
    """The cap in force: the configured one, lowered so that the connections' descriptors stay
    within half of the open-file limit; at least one."""
    return max(1, min(configured, open_files // 2 // FDS_PER_CONNECTION))


def backoff(delay: float) -> float:
    """The pause after an accept failure that followed a pause of `delay` (0 after a success)."""
    return min(max(2 * delay, BACKOFF_MIN), BACKOFF_MAX)


async def bind(address: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on address (an IP or a host name: its first address)."""
    infos = await asyncio.get_running_loop().getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listener:
    """Runs handle(sock, peer) as a task for each accepted connection, under the cap. The
    handler owns the socket and closes it; it calls settled() once the request head is in."""

    def __init__(self, sock: socket.socket, handle: Handler, cap: int) -> None:
        self.sock = sock
        self.cap = cap
        self._handle = handle
        self._open: set[asyncio.Task[None]] = set()
        # Connections still sending their head and their sockets, oldest first.
        self._unsettled: dict[asyncio.Task[None], socket.socket] = {}
        self._accept_failures = RateLimited(log, "streaming server cannot accept connections", LOG_INTERVAL)
        self._over_cap = RateLimited(log, "streaming connection cap reached: connections dropped or refused", LOG_INTERVAL)
        self._accepting: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._open)

    def start(self) -> None:
        self._accepting = asyncio.create_task(self._accept_loop())

    async def close(self) -> None:
        """Stops accepting and ends every open connection."""
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        self.sock.close()
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        self._accept_failures.close()
        self._over_cap.close()

    def settled(self) -> None:
        """The calling connection has sent its head: from now on it is never dropped for a newcomer."""
        self._unsettled.pop(asyncio.current_task(), None)  # type: ignore[arg-type]

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.0
        while True:
            try:
                conn, address = await loop.sock_accept(self.sock)
            except OSError as exc:
                delay = backoff(delay)
                self._accept_failures.note(error=exc.strerror or str(exc), errno=exc.errno, retry_in=delay)
                await asyncio.sleep(delay)
                continue
            delay = 0.0
            self._admit(conn, str(address))
            # Accepting a backlog completes without suspending: let the connections (and the
            # gRPC handlers sharing this loop) run between two accepts.
            await asyncio.sleep(0)

    def _admit(self, conn: socket.socket, peer: str) -> None:
        if len(self._open) >= self.cap:
            if not self._unsettled:
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                conn.close()
                self._over_cap.note(peer=peer)
                return
            # Shut down rather than closed under the handler's pending read (the event loop
            # would keep watching a descriptor number the next accept may reuse): the read ends
            # at once and the handler closes the socket, before the next accept (sleep(0) above).
            oldest, sock = next(iter(self._unsettled.items()))
            self._forget(oldest)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            self._over_cap.note(peer=peer)
        task = asyncio.create_task(self._handle(conn, peer))
        self._open.add(task)
        self._unsettled[task] = conn
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._open.discard(task)
        self._unsettled.pop(task, None)
