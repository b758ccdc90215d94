"""The cgroup filesystem: which hierarchies are mounted, and creating, joining and pruning cgroups.

cgroup v1 has one hierarchy for each mounted controller set (here cpu and cpuacct apart) plus
name=systemd; a pod's cgroup is made in every one of them, as runc's cgroupfs manager does.
In hybrid mode the unified (v2) hierarchy is used as well, so that the processes are tracked
there too. Pure cgroup v2 has the one unified hierarchy.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cri_shim.linux import mountinfo

log = logging.getLogger("cri_shim.cgroups")

# Where the cgroup filesystems are mounted: the unified hierarchy, or one directory per v1 one.
ROOT = Path("/sys/fs/cgroup")

_CPUSET_FILES = ("cpuset.cpus", "cpuset.mems")


@dataclass(frozen=True)
class Hierarchies:
    """Mount points of the cgroup hierarchies in use; unified is True on a pure v2 host."""

    roots: tuple[str, ...]
    unified: bool

    def dirs(self, path: str) -> list[str]:
        """The directory of a cgroup (absolute path below the roots) in every hierarchy."""
        rel = path.lstrip("/")
        return [os.path.join(root, rel) if rel else root for root in self.roots]


def detect(mounts: list[mountinfo.Mount] | None = None) -> Hierarchies:
    """The hierarchies mounted in this mount namespace."""
    mounts = mountinfo.read() if mounts is None else mounts
    v1: list[str] = []
    seen: set[frozenset[str]] = set()
    v2: list[str] = []
    for m in mounts:
        if m.fstype == "cgroup":
            options = frozenset(o for o in m.super_options if o not in ("rw", "ro"))
            if options not in seen:  # the same hierarchy mounted twice
                seen.add(options)
                v1.append(m.mount_point)
        elif m.fstype == "cgroup2":
            v2.append(m.mount_point)
    if not v1:
        return Hierarchies(roots=tuple(v2[:1]), unified=True)
    return Hierarchies(roots=tuple(v1 + v2[:1]), unified=False)


def is_v2(root: Path = ROOT) -> bool:
    """Whether the host runs cgroup v2 alone (the root is the unified hierarchy)."""
    return (root / "cgroup.controllers").exists()


def swap_accounting(unified: bool, root: Path = ROOT) -> bool:
    """Whether memory cgroups account swap (memory.swap.max in v2, memsw in v1)."""
    if unified:
        return (root / "memory.swap.max").exists() or any(root.glob("*/memory.swap.max"))
    return (root / "memory/memory.memsw.limit_in_bytes").exists()


def read_membership(pid: int | str = "self") -> str | None:
    """The text of /proc/<pid>/cgroup ("id:controllers:path" lines); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def paths_of(pid: int) -> list[str]:
    """The cgroup paths (below the hierarchies' roots) a process is in; none when it is gone."""
    return [line.split(":", 2)[2] for line in (read_membership(pid) or "").splitlines() if line.count(":") >= 2]


def own_procs_file(mounts: list[mountinfo.Mount] | None = None, membership: str | None = None) -> str | None:
    """cgroup.procs of the cgroup this process is in, in one mounted hierarchy: the unified one
    where it is mounted, else the first v1 one; None when no mount shows that cgroup.

    membership is the text of /proc/self/cgroup ("id:controllers:path" lines; the unified
    hierarchy's line is "0::path"). A hierarchy mounted from a subdirectory (a bind mount, a
    cgroup namespace) shows only the cgroups below its root.
    """
    mounts = mountinfo.read() if mounts is None else mounts
    text = read_membership() if membership is None else membership
    paths: dict[frozenset[str], str] = {}
    for line in (text or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3:
            paths[frozenset(c for c in fields[1].split(",") if c)] = fields[2]
    candidates = [(m, paths.get(frozenset())) for m in mounts if m.fstype == "cgroup2"]
    for m in mounts:
        if m.fstype == "cgroup":
            options = set(m.super_options)
            candidates += [(m, path) for controllers, path in paths.items() if controllers and controllers <= options]
    for m, path in candidates:
        if path is None:
            continue
        root = m.root.rstrip("/")
        if path == root or path.startswith(root + "/"):
            return os.path.join(m.mount_point, path[len(root):].lstrip("/"), "cgroup.procs")
    return None


def missing_dirs(h: Hierarchies, path: str) -> list[str]:
    """The directories, parents first, that creating the cgroup at path would make."""
    wanted: list[str] = []
    for root, leaf in zip(h.roots, h.dirs(path)):
        chain = []
        current = leaf
        while current != root and not os.path.isdir(current):
            chain.append(current)
            current = os.path.dirname(current)
        wanted.extend(reversed(chain))
    return wanted


def create(h: Hierarchies, path: str) -> None:
    """Makes the cgroup at path (and missing parents) in every hierarchy."""
    for root, leaf in zip(h.roots, h.dirs(path)):
        os.makedirs(leaf, exist_ok=True)
        # Only a v1 cpuset root has cpuset.cpus (a v2 root shows cpuset.cpus.effective).
        if os.path.exists(os.path.join(root, "cpuset.cpus")):
            _inherit_cpuset(root, leaf)


def _inherit_cpuset(root: str, leaf: str) -> None:
    """v1 cpuset cgroups start with no CPUs and no memory nodes: copy them down from the parent."""
    chain = []
    current = leaf
    while current != root:
        chain.append(current)
        current = os.path.dirname(current)
    for d in reversed(chain):
        for name in _CPUSET_FILES:
            target = os.path.join(d, name)
            with open(target) as f:
                if f.read().strip():
                    continue
            with open(os.path.join(os.path.dirname(d), name)) as f:
                value = f.read().strip()
            with open(target, "w") as f:
                f.write(value)


def processes(h: Hierarchies, path: str) -> set[int]:
    """The pids in the cgroup at path, in any hierarchy (an absent cgroup has none)."""
    pids: set[int] = set()
    for d in h.dirs(path):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids.update(int(line) for line in f if line.strip())
        except FileNotFoundError:
            continue
    return pids


def prune(dirs: list[str]) -> None:
    """Removes the given cgroup directories, deepest first, where they are empty; gone is fine."""
    for d in sorted(set(dirs), key=lambda p: p.count("/"), reverse=True):
        try:
            os.rmdir(d)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                raise
            if exc.errno != errno.ENOENT:
                log.debug("cgroup kept", extra={"cgroup": d, "reason": exc.strerror})
