"""Making a pod's namespaces on a dedicated thread: pins, hostname, sysctls, lo.

Namespaces belong to threads. A fresh thread (never one from a pool: cri_shim.linux.threads)
unshares the pod's net, ipc and uts namespaces, bind-mounts /proc/thread-self/ns/<kind> onto the
pin files, sets the hostname and the pod's sysctls (/proc/sys resolves against the calling
thread's namespaces), brings lo up through a socket made in the new network namespace, and exits, so
the namespaces live on only through the pins. That costs about 2 ms; running util-linux
`unshare --net=F ...` plus a shell for the rest costs about 6 ms.

A pod with a user namespace (cri_shim.idmappings) has its namespaces made by a child process
instead (cri_shim.linux.userns), as a multithreaded process can neither unshare nor setns a
user namespace: the user, network, IPC and UTS namespaces are made together, so that the user
namespace owns the others; the daemon pins the four and the child goes. The thread then joins
the pinned network and UTS namespaces (setns, allowed for every kind but user) for the
hostname, sysctls and lo, with the daemon's privileges over what its child made.

A pod PID namespace is not made here: the infra container (cri_shim.sandbox.infra) makes it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from cri_shim.idmappings import IdMappings
from cri_shim.linux import proc, syscalls, threads, userns
from cri_shim.sandbox.sysctl import Sysctl

_FLAGS = {"net": syscalls.CLONE_NEWNET, "ipc": syscalls.CLONE_NEWIPC, "uts": syscalls.CLONE_NEWUTS}
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class SysctlFailed(Exception):
    """The kernel refused a sysctl (unknown in this namespace, or a bad value)."""

    def __init__(self, sysctl: Sysctl, err: OSError) -> None:
        super().__init__(f"sysctl {sysctl.name}={sysctl.value!r}: {err.strerror}")
        self.sysctl = sysctl


@dataclass
class NamespaceSpec:
    """What to make: pins by kind, the hostname (with a uts pin), sysctls."""

    pins: dict[str, str]
    hostname: str
    sysctls: tuple[Sysctl, ...] = ()
    ids: IdMappings | None = None


def pin_path(run_dir: Path, kind: str, sandbox_id: str) -> str:
    """Where the pin of a sandbox's namespace of one kind is mounted."""
    return str(run_dir / "ns" / kind / sandbox_id)


def unpin(path: str) -> None:
    """Unmounts (lazily) and removes a pin; an absent one is already removed."""
    while syscalls.umount_detach(path):
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))


def _write_sysctl(s: Sysctl) -> None:
    try:
        with open(s.path, "w") as f:
            f.write(s.value)
    except OSError as exc:
        raise SysctlFailed(s, exc) from None


def _pin(namespace: str, path: str) -> None:
    """Bind-mounts a namespace file (/proc/.../ns/<kind>) onto a new pin file at path."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o444))
    syscalls.mount(namespace, path, None, syscalls.MS_BIND)


def _unshare_and_pin(pins: dict[str, str]) -> None:
    flags = 0
    for kind in pins:
        flags |= _FLAGS[kind]
    if flags:
        syscalls.unshare(flags)
    for kind, path in pins.items():
        _pin(proc.namespace_path("thread-self", kind), path)


def _pin_all(pid: int, pins: dict[str, str]) -> None:
    for kind, path in pins.items():
        _pin(proc.namespace_path(pid, kind), path)


async def _make_with_userns(pins: dict[str, str], ids: IdMappings) -> None:
    """Makes the user namespace and, owned by it, the other namespaces pins names (with "user"),
    and pins them all, through a child process (see the module's docstring)."""
    async with userns.holder(list(pins), ids) as pid:
        await asyncio.to_thread(_pin_all, pid, pins)


def _join(pins: dict[str, str]) -> None:
    for kind, path in pins.items():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            syscalls.setns(fd, _FLAGS[kind])
        finally:
            os.close(fd)


def _in_thread(spec: NamespaceSpec) -> None:
    """Runs on the dedicated thread; the thread ends right after, taking its namespaces with it."""
    if spec.ids is not None:
        _join({kind: path for kind, path in spec.pins.items() if kind != "user"})
    else:
        _unshare_and_pin(spec.pins)
    if "uts" in spec.pins:
        syscalls.sethostname(spec.hostname)
    for s in spec.sysctls:
        _write_sysctl(s)
    if "net" in spec.pins:
        _lo_up()


async def make(spec: NamespaceSpec) -> None:
    """Makes the namespaces of spec.

    If the caller is cancelled, this still waits for the thread to finish, so that a rollback
    that follows sees every pin the thread made.
    """
    if spec.ids is not None:
        await _make_with_userns(spec.pins, spec.ids)
    await threads.on_new_thread(lambda: _in_thread(spec), "pod-namespaces", lambda _: None)
