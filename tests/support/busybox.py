"""Builds a small root filesystem from Debian's static busybox: the base of every test image.

There is no internet here, so test images are made from /bin/busybox (package busybox-static)
with every applet hardlinked in /bin (as the busybox image has them: masking one applet's path
must not mask busybox itself, as a bind over a symlink would), plus the /etc files images usually carry. Users and groups
are parameters so that tests can check user resolution (names, uids, supplemental groups).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

DEFAULT_USERS = [("root", 0, 0, "/root"), ("nobody", 65534, 65534, "/nonexistent"), ("www-data", 33, 33, "/var/www")]
DEFAULT_GROUPS = [("root", 0, []), ("www-data", 33, []), ("nogroup", 65534, [])]


def applets() -> list[str]:
    """The applet names the installed busybox provides."""
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout
    return [a for a in out.split() if a and "/" not in a]


def make_rootfs(
    dest: Path,
    users: list[tuple[str, int, int, str]] | None = None,
    groups: list[tuple[str, int, list[str]]] | None = None,
) -> Path:
    """Writes a busybox root filesystem at dest and returns dest.

    users are (name, uid, gid, home); groups are (name, gid, member names).
    """
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www", "usr/bin", "usr/sbin", "sbin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    for applet in applets():
        link = dest / "bin" / applet
        if not link.exists():
            os.link(dest / "bin/busybox", link)
    users = DEFAULT_USERS if users is None else users
    groups = DEFAULT_GROUPS if groups is None else groups
    (dest / "etc/passwd").write_text("".join(f"{n}:x:{u}:{g}:{n}:{h}:/bin/sh\n" for n, u, g, h in users))
    (dest / "etc/group").write_text("".join(f"{n}:x:{g}:{','.join(m)}\n" for n, g, m in groups))
    (dest / "etc/hostname").write_text("busybox\n")
    return dest
