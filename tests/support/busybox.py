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
# The dynamic busybox (scripts/install-deps --dev unpacks it): its shell execs commands through
# PATH, as the busybox images critest uses do.
PATH_BUSYBOX = Path(__file__).resolve().parents[2] / ".cache/busybox/bin/busybox"

DEFAULT_USERS = [("root", 0, 0, "/root"), ("nobody", 65534, 65534, "/nonexistent"), ("www-data", 33, 33, "/var/www")]
DEFAULT_GROUPS = [("root", 0, []), ("www-data", 33, []), ("nogroup", 65534, [])]


def applets(busybox: Path = BUSYBOX) -> list[str]:
    """The applet names a busybox binary provides."""
    out = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout
    return [a for a in out.split() if a and "/" not in a]


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries a dynamic binary loads (its interpreter included), as ldd resolves them."""
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    return [Path(part) for line in out.splitlines() for part in line.split() if part.startswith("/")]


def make_rootfs(
    dest: Path,
    users: list[tuple[str, int, int, str]] | None = None,
    groups: list[tuple[str, int, list[str]]] | None = None,
    busybox: Path = BUSYBOX,
) -> Path:
    """Writes a busybox root filesystem at dest and returns dest.

    users are (name, uid, gid, home); groups are (name, gid, member names). A dynamic busybox
    brings the host's copies of the libraries it loads, at the same paths.
    """
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www", "usr/bin", "usr/sbin", "sbin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(busybox, dest / "bin/busybox")
    if busybox != BUSYBOX:
        for lib in shared_libraries(busybox):
            target = dest / lib.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), target)
    for applet in applets(busybox):
        link = dest / "bin" / applet
        if not link.exists():
            os.link(dest / "bin/busybox", link)
    users = DEFAULT_USERS if users is None else users
    groups = DEFAULT_GROUPS if groups is None else groups
    (dest / "etc/passwd").write_text("".join(f"{n}:x:{u}:{g}:{n}:{h}:/bin/sh\n" for n, u, g, h in users))
    (dest / "etc/group").write_text("".join(f"{n}:x:{g}:{','.join(m)}\n" for n, g, m in groups))
    (dest / "etc/hostname").write_text("busybox\n")
    return dest
