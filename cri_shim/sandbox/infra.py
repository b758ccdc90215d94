"""The infra processes holding pod PID namespaces: finding the binary, watching, killing, reaping.

An infra process is named by (pid, start time). Processes this daemon spawned are its children
and are reaped here; after a restart they belong to init (or a subreaper), which reaps them.
A pidfd watch notices an infra process that dies while the daemon runs, so its sandbox can
turn NOTREADY, as containerd does when a pause container exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Callable

from cri_shim.errors import Internal
from cri_shim.linux import proc
from cri_shim.sandbox.record import Infra

log = logging.getLogger("cri_shim.sandbox")


def marker(sandbox_id: str) -> str:
    """The environment entry an infra process carries, so that recovery can find one whose pid
    a crash kept from being recorded."""
    return f"CRI_SHIM_SANDBOX={sandbox_id}"


def argv(binary: str) -> list[str]:
    """The infra command line: catatonit in pause mode (it only waits, and reaps as PID 1)."""
    path = shutil.which(binary)
    if path is None:
        raise Internal(f"infra binary {binary!r} not found (runtime.infra); a pod PID namespace needs it")
    return [path, "-P"]


class InfraProcesses:
    """Children to reap and exit watches, by sandbox id."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._watches: dict[str, int] = {}

    def adopt(self, child: subprocess.Popen[bytes]) -> Infra:
        """Takes a freshly spawned infra process; its identity for the record."""
        started = proc.start_time(child.pid)
        if started is None:
            child.wait()
            raise Internal(f"infra process exited at once with status {child.returncode}")
        self._children[child.pid] = child
        return Infra(child.pid, started)

    def watch(self, sandbox_id: str, infra: Infra, on_exit: Callable[[str], None]) -> bool:
        """Calls on_exit(sandbox_id) once the infra process exits; False when it already has."""
        fd = proc.open_pidfd(infra.pid, infra.start_time)
        if fd is None:
            return False
        loop = asyncio.get_running_loop()

        def exited() -> None:
            self.unwatch(sandbox_id)
            self._reap(infra.pid)
            log.warning("infra process exited", extra={"sandbox": sandbox_id, "pid": infra.pid})
            on_exit(sandbox_id)

        self._watches[sandbox_id] = fd
        loop.add_reader(fd, exited)
        return True

    def unwatch(self, sandbox_id: str) -> None:
        fd = self._watches.pop(sandbox_id, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    async def stop(self, sandbox_id: str, infra: Infra | None, strays: set[int]) -> None:
        """Kills the recorded infra process and any stray pid of its cgroup, and waits for them."""
        self.unwatch(sandbox_id)
        targets = [(infra.pid, infra.start_time)] if infra else []
        for pid in strays:
            started = proc.start_time(pid)
            if started is not None:
                targets.append((pid, started))
        for pid, started in targets:
            await proc.kill_and_wait(pid, started)
            self._reap(pid)

    def _reap(self, pid: int) -> None:
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait()

    def close(self) -> None:
        for sandbox_id in list(self._watches):
            self.unwatch(sandbox_id)
