"""Crash-safe file writes: a reader sees the old content or the new, never half of either.

write_json() writes a temporary file in the same directory, fsyncs it, renames it over the
target and fsyncs the directory, so the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Makes the directory entries below path durable (renames, creations, removals)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp(path: Path) -> Path:
    """Where write_bytes writes path's next content before renaming it into place."""
    return path.with_name(f".{path.name}.tmp")


def remove_temporaries(directory: Path) -> list[Path]:
    """Removes what writes a crash cut short left in directory (their targets keep the old
    content, or never existed); returns them. Only for a directory no one writes to meanwhile."""
    stray = sorted(directory.glob(".*.tmp"))
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def write_bytes(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replaces path with data atomically; durably (fsync of file and directory) unless told not to.

    durable=False suits files rebuilt from a record (pod hostname, hosts, resolv.conf): a reader
    still never sees half a file, and two fsyncs a file are saved.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def encode_json(obj: Any) -> bytes:
    """obj as write_json stores it."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_json(path: Path, obj: Any, durable: bool = True) -> None:
    """Replaces path with obj as JSON atomically (and durably unless told not to, as write_bytes)."""
    write_bytes(path, encode_json(obj), durable=durable)


def read_json(path: Path) -> Any:
    """The JSON object stored at path (FileNotFoundError or ValueError when absent or torn)."""
    return json.loads(path.read_bytes())


def remove(path: Path) -> None:
    """Removes path durably, with the temporary file a crash mid-write may have left beside it;
    an absent file is already removed."""
    _temp(path).unlink(missing_ok=True)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
