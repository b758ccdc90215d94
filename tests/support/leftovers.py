"""What a test daemon may leave in the host's shared places, found and released after each test.

cgroups live in the host's one cgroup tree and processes outlive a killed daemon, so every tier
(the conformance one included) releases them; this module imports no generated API code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.daemon import Daemon


def cgroup_roots() -> list[Path]:
    """Every mounted cgroup hierarchy."""
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-", 6) + 1]
            if fstype in ("cgroup", "cgroup2"):
                roots.append(Path(fields[4]))
    return roots


def cgroup_dirs(parent: str) -> list[str]:
    """Every cgroup directory at or below the daemon's own cgroup parent, in every hierarchy."""
    found = []
    for root in cgroup_roots():
        top = root / parent.lstrip("/")
        if top.is_dir():
            found += [str(top)] + [str(p) for p in top.rglob("*") if p.is_dir()]
    return sorted(found)


def infra_processes(daemon: Daemon) -> list[int]:
    """Live catatonit processes started for this daemon: its children, or anything in its cgroup parent."""
    parent = daemon.config["runtime"]["default_cgroup_parent"]
    daemon_pid = daemon.proc.pid if daemon.proc and daemon.proc.poll() is None else -1
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "catatonit":
                continue
            state, ppid_text = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            ppid = int(ppid_text)
            cgroups = (entry / "cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state == "Z":  # exited; an orphan's zombie waits for init (this machine's init reaps late)
            continue
        if ppid == daemon_pid or f"{parent}/" in cgroups:
            pids.append(int(entry.name))
    return pids


def processes_of(cgroup_parent: str, directory: Path) -> list[int]:
    """Live processes in a cgroup below cgroup_parent or naming directory on their command line
    (container processes and their monitors), the caller excepted."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cgroups = (entry / "cgroup").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z" and (f"{cgroup_parent}/" in cgroups or f"{directory}/" in cmdline):
            found.append(int(entry.name))
    return sorted(found)


def container_processes(daemon: Daemon) -> list[int]:
    """Live container monitors (conmon), container processes and runtime calls of this daemon:
    what runs in a cgroup below its cgroup parent or names its directory, except the daemon
    itself and pod infra processes. They outlive a killed daemon, as infra processes do."""
    own = {daemon.proc.pid} if daemon.proc and daemon.proc.poll() is None else set()
    own.update(infra_processes(daemon))
    parent = daemon.config["runtime"]["default_cgroup_parent"]
    return [pid for pid in processes_of(parent, daemon.dir) if pid not in own]


def kill_and_unmount(pids: list[int], directory: Path) -> None:
    """SIGKILLs pids (ours, found by the caller), then lazily unmounts every mount below directory,
    the last mounted first: what a runtime left under its own directory after a test or a run."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in reversed(points):
        if point.startswith(f"{directory}/"):
            subprocess.run(["umount", "-l", point], check=False)


def release_leftovers(daemon: Daemon) -> None:
    """After a test (passed or not): kills the daemon's infra, monitor and container processes,
    unmounts what it mounted under its directory and removes its cgroups, which live in the
    host's shared cgroup tree."""
    kill_and_unmount(infra_processes(daemon) + container_processes(daemon), daemon.dir)
    parent = daemon.config["runtime"]["default_cgroup_parent"]
    deadline = time.monotonic() + 5
    for d in sorted(cgroup_dirs(parent), key=lambda p: p.count("/"), reverse=True):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:  # a process still dying, or not ours: leave it
                    break
                time.sleep(0.05)
