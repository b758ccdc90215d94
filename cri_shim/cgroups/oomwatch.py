"""Watches the memory.events of every live container on cgroup v2, so that an OOM kill is known
after the container's cgroup is gone.

Under the systemd cgroup driver a container's cgroup is a scope, which systemd stops and
removes as soon as its last process is gone: often before the daemon learns of the exit from
the monitor, so memory.events cannot be read then. OomWatcher watches the file while the
container lives (one inotify instance on the event loop, one watch per container, as the
monitors' and containerd's shims' watchers do) and, once the kernel has counted an OOM in the
cgroup ("oom": the limit was hit with nothing left to reclaim, which comes before the kill;
"oom_kill": a process was killed), leaves a marker file in the container's bundle that outlives
the cgroup and a daemon restart. A watch ends by itself when its cgroup is removed. On cgroup v1
it does nothing: the monitor's eventfd on memory.oom_control does that there.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from cri_shim.cgroups import stats
from cri_shim.linux import inotify

log = logging.getLogger("cri_shim.cgroups")

MARKER = "memory-oom"


def marker(bundle: Path) -> Path:
    return bundle / MARKER


def killed(bundle: Path) -> bool:
    """Whether the watcher saw an OOM in the cgroup of the container whose bundle this is."""
    return marker(bundle).exists()


class OomWatcher:
    """One inotify instance on the loop; watch() adds a container's memory.events to it."""

    def __init__(self, root: Path = stats.ROOT) -> None:
        self.root = root
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        # watch descriptor -> (the container's memory.events, its bundle)
        self._watches: dict[int, tuple[Path, Path]] = {}

    def start(self) -> None:
        """Begins watching (call from the running loop); nothing to do on cgroup v1."""
        if not stats.is_v2(self.root):
            return
        fd = inotify.init()
        if fd < 0:
            log.warning("inotify unavailable: OOM kills are known only while the container's cgroup exists")
            return
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_inotify)

    def close(self) -> None:
        if self._fd >= 0 and self._loop is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
        self._fd = -1
        self._watches.clear()

    def watch(self, cgroups_path: str, bundle: Path) -> None:
        """Watches the container's memory.events until its cgroup is removed (a container whose
        cgroup is gone already has nothing left to watch)."""
        if self._fd < 0:
            return
        events = stats.cgroup_dir(cgroups_path, "memory", self.root) / "memory.events"
        wd = inotify.add_watch(self._fd, str(events), inotify.IN_MODIFY)
        if wd < 0:
            return
        self._watches[wd] = (events, bundle)
        self._check(wd)  # an OOM counted before the watch began

    def _on_inotify(self) -> None:
        for event in inotify.read_events(self._fd):
            if event.mask & inotify.IN_IGNORED:
                self._watches.pop(event.wd, None)
            elif event.wd in self._watches:
                self._check(event.wd)

    def _check(self, wd: int) -> None:
        events, bundle = self._watches[wd]
        counts = stats.read_keyed(events)
        if not (counts.get("oom", 0) or counts.get("oom_kill", 0)):
            return
        try:
            os.close(os.open(marker(bundle), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except OSError as exc:  # the bundle is being removed with the container
            log.debug("no OOM marker written", extra={"bundle": str(bundle), "error": str(exc)})
        del self._watches[wd]
        inotify.rm_watch(self._fd, wd)
