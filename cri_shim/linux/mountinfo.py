"""Reading /proc/self/mountinfo: which paths are mount points, and of which filesystem type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: the root inside the filesystem, where it is mounted, its type and
    options, and its optional fields (propagation: "shared:1", "master:2", ...)."""

    root: str
    mount_point: str
    fstype: str
    super_options: tuple[str, ...]
    optional: tuple[str, ...] = ()


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return text.encode().decode("unicode_escape") if "\\" in text else text


def parse(text: str) -> list[Mount]:
    """The mounts described by a mountinfo text."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        sep = fields.index("-", 6)
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fields[sep + 1],
                super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
                optional=tuple(fields[6:sep]),
            )
        )
    return mounts


def read(pid: str = "self") -> list[Mount]:
    """The mounts of a process's mount namespace."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return parse(f.read())


def mounted_at(mounts: list[Mount], fstype: str | None = None) -> dict[str, str]:
    """Mount point to filesystem type, optionally only for one type (the last mount on a point wins)."""
    return {m.mount_point: m.fstype for m in mounts if fstype is None or m.fstype == fstype}
