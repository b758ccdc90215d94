"""Idmapped mounts with the new mount API (open_tree, mount_setattr, move_mount), through ctypes.

An idmapped mount shows the files of a filesystem through a user namespace's mapping: a file
owned by host uid 0 on disk appears owned by the namespace's host id for container uid 0, so the
container's root sees it as its own, and what the container writes there lands on disk with the
ids it has inside. The kernel (5.12+) makes one from a detached copy of a mount: open_tree
(OPEN_TREE_CLONE, AT_RECURSIVE for submounts), mount_setattr(MOUNT_ATTR_IDMAP, the namespace's
fd) on it, then move_mount to attach it where a runtime can bind it. Handlers that cannot make
idmapped mounts themselves (runc before 1.2) get such mounts as plain bind sources.

overlayfs takes each layer as a private clone of its mount, and before Linux 6.15 it clones
only mounts attached in the caller's mount namespace: given a detached copy (open_tree's fd as
/proc/self/fd/N) a 6.12 kernel fails the overlay mount with EINVAL. So overlays get their
idmapped layers attached (attached()), under a directory of their own, only while the overlay
is mounted; the overlay keeps its clones after they are unmounted.
"""

from __future__ import annotations

import ctypes
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cri_shim.linux import syscalls

# x86_64 and aarch64 share these numbers (the new mount API came after the generic table).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442

_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_AT_SYMLINK_NOFOLLOW = 0x100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100
MOUNT_ATTR_IDMAP = 0x00100000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def supported() -> bool:
    """Whether this machine has the syscalls (an architecture whose numbers are known here)."""
    return platform.machine() in ("x86_64", "aarch64")


def _call(what: str, number: int, *args: object) -> int:
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def detached(source: str, userns: str) -> int:
    """An fd of a detached, idmapped copy of the mount tree at source, mapped through the user
    namespace pinned at userns. Attached nowhere, it lives as long as the fd, or as long as
    something made from /proc/self/fd/<fd> (an overlay layer) holds it: nothing to unmount.

    Symlinks in source's last component are not followed: callers pass resolved paths.
    """
    tree = _call(f"open_tree {source}", _SYS_OPEN_TREE, ctypes.c_int(_AT_FDCWD), os.fsencode(source),
                 ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_RECURSIVE | _AT_SYMLINK_NOFOLLOW))
    try:
        ns = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP, userns_fd=ns)
            _call(f"mount_setattr(idmap) of {source}", _SYS_MOUNT_SETATTR, ctypes.c_int(tree), b"",
                  ctypes.c_uint(_AT_EMPTY_PATH | _AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
        finally:
            os.close(ns)
    except BaseException:
        os.close(tree)
        raise
    return tree


def make(source: str, target: str, userns: str) -> None:
    """Attaches at target (an existing file or directory, matching source's kind) an idmapped copy
    of the mount tree at source (see detached)."""
    tree = detached(source, userns)
    try:
        _call(f"move_mount to {target}", _SYS_MOVE_MOUNT, ctypes.c_int(tree), b"", ctypes.c_int(_AT_FDCWD),
              os.fsencode(target), ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH))
    finally:
        os.close(tree)


@contextmanager
def attached(sources: list[str], userns: str, staging: Path) -> Iterator[list[Path]]:
    """Idmapped copies (see detached) of sources, attached at <a new directory under staging>/<n>
    while the block runs, then unmounted and removed (release); a crash leaves them for
    release_all."""
    staging.mkdir(parents=True, exist_ok=True, mode=0o700)
    where = Path(tempfile.mkdtemp(dir=staging))
    try:
        copies = []
        for n, source in enumerate(sources):
            target = where / str(n)
            target.mkdir(mode=0o700)
            make(source, str(target), userns)
            copies.append(target)
        yield copies
    finally:
        release(where)


def release(where: Path) -> None:
    """Unmounts and removes every entry of where (files and directories idmapped copies were
    attached at), then where; absent is released. It never walks into a mount: each entry is
    unmounted first and then removed with rmdir or unlink, which fail rather than delete through one."""
    try:
        entries = list(os.scandir(where))
    except FileNotFoundError:
        return
    for entry in entries:
        while syscalls.umount_detach(entry.path):
            pass
        if entry.is_dir(follow_symlinks=False):
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)
    os.rmdir(where)


def release_all(root: Path) -> None:
    """Releases every directory of idmapped copies under root, at start-up, when nothing uses them."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for entry in os.scandir(root):
        release(Path(entry.path))
