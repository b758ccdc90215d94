"""Disk usage of a directory tree, each inode counted once (hardlinks share their blocks)."""

from __future__ import annotations

import os
from pathlib import Path


def disk_usage(top: str) -> tuple[int, int]:
    """(bytes allocated, inodes) below top, top itself not counted."""
    seen: set[int] = set()
    total = 0
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(base, name))
            except FileNotFoundError:
                continue
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total, len(seen)


def mountpoint_of(path: Path) -> str:
    """The mount point of the filesystem holding path (kubelet asks cAdvisor about it)."""
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return str(path)
