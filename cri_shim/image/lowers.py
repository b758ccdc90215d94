"""Read-only lookups in the layers below the one being applied, confined to each layer.

A layer is applied into an empty directory, but its hardlinks may name a file that only a
lower layer has (containerd applies a layer onto a view of its parents, so the link copies
the file up). The helper opens each lower layer directory before it chroots, and resolves
names in them with openat2(RESOLVE_IN_ROOT): `..` and symlinks, absolute ones included,
cannot leave that layer, whatever the archive says.
"""

from __future__ import annotations

import ctypes
import os
import stat

_SYS_OPENAT2 = 437  # the same number on every architecture that has it (x86_64, arm64, ...)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """openat2(root_fd, path, flags, RESOLVE_IN_ROOT): path is resolved as if root_fd were /."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(root_fd), os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class Lowers:
    """The lower layers of the layer being applied, topmost first, as directory descriptors."""

    def __init__(self, dirs: list[str]) -> None:
        self.fds = [os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for d in dirs]

    def find(self, rel: str) -> tuple[int, os.stat_result] | None:
        """(layer fd, stat) of the topmost layer that has rel, or None if absent or whited out."""
        for root in self.fds:
            try:
                st = self.lstat(root, rel)
            except FileNotFoundError:
                if self._hidden_below(root, rel):
                    return None
                continue
            except NotADirectoryError:
                return None
            return None if is_whiteout(st) else (root, st)
        return None

    @staticmethod
    def lstat(root: int, rel: str) -> os.stat_result:
        fd = open_in_root(root, rel, os.O_PATH | os.O_NOFOLLOW)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    @staticmethod
    def readlink(root: int, rel: str) -> str:
        fd = open_in_root(root, rel, os.O_PATH | os.O_NOFOLLOW)
        try:
            return os.readlink("", dir_fd=fd)
        finally:
            os.close(fd)

    @staticmethod
    def open_file(root: int, rel: str) -> int:
        return open_in_root(root, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)

    def _hidden_below(self, root: int, rel: str) -> bool:
        """True when this layer hides the lower ones at rel: an ancestor is whited out or opaque."""
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            try:
                fd = open_in_root(root, ancestor, os.O_PATH | os.O_NOFOLLOW)
            except OSError:
                return False
            try:
                st = os.fstat(fd)
                if is_whiteout(st):
                    return True
                if stat.S_ISDIR(st.st_mode) and _opaque(root, ancestor):
                    return True
            finally:
                os.close(fd)
        return False


def _opaque(root: int, rel: str) -> bool:
    try:
        fd = open_in_root(root, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return os.getxattr(fd, "trusted.overlay.opaque") == b"y"
    except OSError:
        return False
    finally:
        os.close(fd)
