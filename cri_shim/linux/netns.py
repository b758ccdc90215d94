"""Sockets that belong to another network namespace (a pod's pinned one).

A socket stays in the network namespace it was created in for its whole life: connect(),
bind() and routing all use that namespace, whichever thread calls them. So only socket()
itself has to run inside the pod's namespace; it runs on a fresh thread that setns()es there
and then exits (cri_shim.linux.threads), and the sockets come back ready for the event loop.
"""

from __future__ import annotations

import os
import socket

from cri_shim.linux import syscalls, threads


def _make(families: tuple[socket.AddressFamily, ...]) -> list[socket.socket]:
    """Non-blocking TCP sockets of the given families in the calling thread's namespace; a family
    the namespace does not support (IPv6 disabled) is left out."""
    made = []
    for family in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        except OSError:
            continue
        sock.setblocking(False)
        made.append(sock)
    return made


def _make_in(path: str, families: tuple[socket.AddressFamily, ...]) -> list[socket.socket]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open network namespace {path}: {exc.strerror}") from None
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    finally:
        os.close(fd)
    return _make(families)


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


async def tcp_sockets(netns: str | None, families: tuple[socket.AddressFamily, ...]) -> list[socket.socket]:
    """Unconnected non-blocking TCP sockets in the network namespace pinned at netns (None: the
    daemon's own), one per family the namespace supports, in the order asked."""
    if netns is None:
        return _make(families)
    return await threads.on_new_thread(lambda: _make_in(netns, families), "netns-socket", _close_all)
