"""Paths inside a container's root filesystem, resolved without ever leaving it.

An image is hostile input: /etc/passwd may be a symlink to /../../host/etc/shadow. Every path
the runtime reads or creates inside a rootfs goes through resolve(), which walks the path one
component at a time and evaluates each symlink as if the rootfs were "/" (what containerd's
fs.RootPath and securejoin do), so the result always lies below the root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cri_shim.errors import InvalidArgument

# The kernel gives up after 40 symlinks in one lookup; so do we.
MAX_SYMLINKS = 40


class EscapeError(InvalidArgument):
    """A path could not be resolved inside the root (symlink loop, or a swap while in use)."""


def resolve(root: Path, path: str) -> Path:
    """root/path with every symlink evaluated relative to root; never a path outside root."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            # The rest does not exist yet: apply it lexically, never above root.
            for rest in [part, *parts]:
                if rest == "..":
                    if done:
                        done.pop()
                else:
                    done.append(rest)
            return root.joinpath(*done)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise EscapeError(f"too many symlinks resolving {path!r} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return root.joinpath(*done)


def read_text(root: Path, path: str) -> str | None:
    """The content of a regular file inside root, or None when it is absent or not a file."""
    target = resolve(root, path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink swapped in after resolution
            raise EscapeError(f"{path!r} changed while being read") from exc
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(16 * 1024 * 1024).decode("utf-8", "replace")


def mkdir_all(root: Path, path: str, mode: int = 0o755) -> Path:
    """Creates path (and its parents) inside root; returns the resolved directory."""
    target = resolve(root, path)
    target.mkdir(parents=True, exist_ok=True, mode=mode)
    # A component created by us cannot be a symlink; one that existed was resolved above.
    if resolve(root, path) != target:
        raise EscapeError(f"{path!r} changed while being created in {root}")
    return target
