"""The daemon's open-file limit.

Every pod, container, exec and streaming connection costs the daemon descriptors, and the
soft RLIMIT_NOFILE a service manager hands out is often 1024. containerd's and CRI-O's units
start them with 1048576; we cannot rely on a unit, so the daemon raises its soft limit to the
hard one itself at start (what Go programs such as containerd also do since Go 1.19).
"""

from __future__ import annotations

import resource
from pathlib import Path

NR_OPEN = Path("/proc/sys/fs/nr_open")


def open_files() -> int:
    """The soft limit on open descriptors in force now."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_open_files() -> tuple[int, int]:
    """Raises the soft RLIMIT_NOFILE to the hard limit (to fs.nr_open when the hard limit is
    unlimited, the most the kernel allows); returns the soft limit before and after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = int(NR_OPEN.read_text()) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, open_files()
