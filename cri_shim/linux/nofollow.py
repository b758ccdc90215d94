"""Opening a directory by a path none of whose components may be a symlink.

The path is walked from "/" one component at a time, each opened relative to the one before
with O_NOFOLLOW, so the kernel refuses a symlink anywhere in it instead of following it, and a
component swapped for a symlink after it was opened cannot redirect what is looked up through
the descriptor. What this gives over openat2(RESOLVE_NO_SYMLINKS): missing components can be
created on the way, each inside the directory just verified.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(Exception):
    """A component of the path is a symlink, or not a directory; the message names it."""


def _component(parent: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    # O_DIRECTORY|O_NOFOLLOW answers ENOTDIR for a symlink: tell the two apart for the message.
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise UnsafePath(f"{shown} is a symlink")
    raise UnsafePath(f"{shown} is not a directory")


def open_dir(path: str, create: bool = False, mode: int = 0o755) -> int:
    """An O_RDONLY descriptor of the directory at the absolute path, reached without following
    a symlink; missing components are made (mode) when create is set, else FileNotFoundError."""
    if not path.startswith("/"):
        raise UnsafePath(f"{path!r} is not an absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    shown = ""
    try:
        for name in (p for p in path.split("/") if p not in ("", ".")):
            if name == "..":
                raise UnsafePath(f"{path!r} climbs with '..'")
            shown += "/" + name
            try:
                child = _component(fd, name, shown)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # made meanwhile: opened (and checked) below
                    os.mkdir(name, mode, dir_fd=fd)
                child = _component(fd, name, shown)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd
