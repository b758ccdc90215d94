"""The container's log file: its path checked before anything is made, then opened without
following a symlink.

The path is the pod's log_directory joined with the container's log_path (kubelet's
/var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log). Whoever can write there (a pod with a
hostPath mount of /var/log) could plant a symlink in it, and a writer that opened the log by
name would create and write a root-owned file wherever that points. So:
- verify() checks the path lexically (no NUL, inside the log directory) and refuses a symlink
  in any component that exists, before the container's rootfs, spec or bundle are made;
- for_create() opens the file's directory component by component without following symlinks,
  making what is missing, and creates the file itself with O_NOFOLLOW; the log writer is handed
  that directory's descriptor and the bare file name, and keeps using that directory whatever
  its path names later (cri_shim.runtime.logcopy);
- for_reopen() opens the directory the same way again, so a log directory swapped for a
  symlink after the create is refused (FailedPrecondition) rather than written through;
- open_append() and open_fresh() open the file beneath a directory descriptor: an existing log
  (never a symlink, a FIFO or a second link), or a new one renamed over the name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from cri_shim.errors import CriError, FailedPrecondition, InvalidArgument
from cri_shim.linux import nofollow

# The kernel's limits on one name and on a whole path (linux/limits.h).
NAME_MAX = 255
PATH_MAX = 4096
# O_NONBLOCK: opening a FIFO planted at the name must not hang (it is refused after the open).
_APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def resolve(log_directory: str, log_path: str) -> str:
    """The container's log file: log_path below the pod's log_directory, never outside it
    ("" when the container asks for no log)."""
    if "\x00" in log_directory:
        raise InvalidArgument("log_directory must not contain NUL")
    if not log_path:
        return ""
    if "\x00" in log_path:
        raise InvalidArgument("log path must not contain NUL")
    if not log_directory:
        if not os.path.isabs(log_path):
            raise InvalidArgument(f"log path {log_path!r} is not absolute (the pod has no log_directory)")
        _check_length(os.path.normpath(log_path))
        return os.path.normpath(log_path)
    if os.path.isabs(log_path):
        raise InvalidArgument(f"log path {log_path!r} must be relative to the pod's log_directory")
    joined = os.path.normpath(os.path.join(log_directory, log_path))
    if not joined.startswith(os.path.normpath(log_directory).rstrip("/") + "/"):
        raise InvalidArgument(f"log path {log_path!r} escapes the pod's log_directory")
    _check_length(joined)
    return joined


def _check_length(path: str) -> None:
    """The kernel's own bounds (a name of NAME_MAX bytes, a path of PATH_MAX), checked up front:
    past them every open fails, and conmon's command line may not even be executed."""
    if len(path.encode()) >= PATH_MAX:
        raise InvalidArgument(f"log path is {len(path.encode())} bytes, too long (PATH_MAX is {PATH_MAX})")
    longest = max(len(part.encode()) for part in path.split("/"))
    if longest > NAME_MAX:
        raise InvalidArgument(f"log path has a {longest}-byte name, too long (NAME_MAX is {NAME_MAX})")


def verify(log_directory: str, log_path: str) -> str:
    """resolve(), then a look at what exists of the path, making nothing: a symlink or a
    non-directory among its directories, or a log file that is not a regular file, is refused."""
    path = resolve(log_directory, log_path)
    if not path:
        return path
    try:
        fd, name = _open_parent(path, create=False, error=InvalidArgument)
    except FileNotFoundError:
        return path  # made at create
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return path
    finally:
        os.close(fd)
    _check_file(st, path)
    return path


@contextlib.contextmanager
def for_create(path: str) -> Iterator[tuple[int, str]]:
    """(directory descriptor, file name) of the log file at path, both made when missing;
    InvalidArgument when a component is a symlink or the file is not a plain file."""
    fd, name = _open_parent(path, create=True, error=InvalidArgument)
    try:
        os.close(open_append(fd, name, path))
        yield fd, name
    finally:
        os.close(fd)


def open_append(directory: int, name: str, path: str) -> int:
    """The log file name in the directory open as directory, made when missing, open for appending;
    InvalidArgument when it is a symlink or not a plain file of its own."""
    try:
        fd = os.open(name, _APPEND_FLAGS, 0o600, dir_fd=directory)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # a symlink, a FIFO, a directory
            raise InvalidArgument(f"log file {path} is not a regular file") from None
        raise
    try:
        _check_file(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return fd


def open_fresh(directory: int, name: str, path: str) -> int:
    """A new, empty log file at name (a reopen, or a log started afresh), open for appending: made
    as <name>.tmp and renamed over name, so that whatever name held (the old log, a symlink
    planted there) is replaced, never written through, and readers never find the name missing.
    A <name>.tmp someone else made is removed first (never followed)."""
    tmp = f"{name}.tmp"
    try:
        os.unlink(tmp, dir_fd=directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise FailedPrecondition(f"{path}.tmp cannot be cleared: {exc.strerror}") from None
    try:
        fd = os.open(tmp, _APPEND_FLAGS | os.O_EXCL, 0o600, dir_fd=directory)
    except FileExistsError:
        raise FailedPrecondition(f"{path}.tmp was made again while the log was reopened") from None
    try:
        os.rename(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def for_reopen(path: str) -> Iterator[tuple[int, str]]:
    """(directory descriptor, file name) of the log file at path, for a reopen:
    FailedPrecondition when its directory is gone or a component became a symlink."""
    try:
        fd, name = _open_parent(path, create=False, error=FailedPrecondition)
    except FileNotFoundError:
        raise FailedPrecondition(f"the directory of log file {path} is gone") from None
    try:
        yield fd, name
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_directory(directory: Path, name: str) -> Iterator[tuple[int, str]]:
    """(descriptor, name) of a log file in a directory of the runtime's own (the bundle)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd, name
    finally:
        os.close(fd)


def _open_parent(path: str, create: bool, error: type[CriError]) -> tuple[int, str]:
    """A descriptor of the log file's directory, reached without following a symlink, and the file's name."""
    parent, name = os.path.split(path)
    try:
        return nofollow.open_dir(parent, create=create), name
    except nofollow.UnsafePath as exc:
        raise error(f"log path {path}: {exc}") from None


def _check_file(st: os.stat_result, path: str) -> None:
    # A second link would let the log be written into a file that lives elsewhere too.
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        raise InvalidArgument(f"log file {path} is not a regular file of its own (a symlink, a device or a hard link)")
