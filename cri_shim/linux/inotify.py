"""inotify through ctypes (the standard library has no binding): a non-blocking instance for the
event loop, its watches, and the events one read returns."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_IGNORED = 0x00008000  # the watch is gone (its file was removed, or inotify_rm_watch)
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    name: str  # the entry's name for a watched directory, "" for a watched file


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


_LIBC = _libc()


def init() -> int:
    """A non-blocking, close-on-exec inotify instance; -1 where there is none."""
    return _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC) if _LIBC else -1


def add_watch(fd: int, path: str, mask: int) -> int:
    """The watch descriptor, or -1 (the path does not exist, or no inotify)."""
    return _LIBC.inotify_add_watch(fd, os.fsencode(path), mask) if _LIBC else -1


def rm_watch(fd: int, wd: int) -> None:
    if _LIBC:
        _LIBC.inotify_rm_watch(fd, wd)


def read_events(fd: int) -> Iterator[Event]:
    """The events waiting on a non-blocking instance (none when nothing waits)."""
    try:
        data = os.read(fd, 64 * 1024)
    except BlockingIOError:
        return
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
        offset += _EVENT.size + length
        yield Event(wd, mask, raw.split(b"\0", 1)[0].decode(errors="replace"))
