"""The Monitor interface: the process that owns a container's stdio, log and exit record.

One monitor process runs per container, outside the daemon, so containers keep running and
having their exits recorded while the daemon is down or restarting; their output waits for the
daemon in a pipe, which writes the log files (cri_shim.runtime.logcopy). The
conmon implementation (cri_shim.runtime.conmon) is the only one today; the interface is what
the lifecycle code and the streaming server use, so another monitor can replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cri_shim.runtime.exits import ExitWatcher
from cri_shim.runtime.runc import Runc


@dataclass(frozen=True)
class MonitorSpec:
    """What a monitor needs to create one container.

    bundle holds config.json and doubles as the container's persistent directory: the
    monitor leaves its pid file, control FIFOs, "exit" and "oom" files there. The log is the
    file log_name in the directory open as log_dir (cri_shim.runtime.logfile verified it), log_path
    by name: it is written there, whatever that directory's path names later, until a reopen or
    a daemon restart looks the path up again.
    scope_slice: under the systemd cgroup driver, the pod's slice, in which the monitor runs in a
    transient scope of its own (as CRI-O's conmon_cgroup "pod"): then systemd, not the daemon's
    unit, owns it, so stopping that unit leaves monitors running. None: the daemon's cgroup.
    """

    container_id: str
    name: str
    bundle: Path
    log_dir: int
    log_name: str
    log_path: str
    runtime: Runc
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    scope_slice: str | None = None


@dataclass(frozen=True)
class Created:
    """A container created (not started) under a monitor."""

    pid: int
    monitor_pid: int
    monitor_start_time: int


class Monitor(Protocol):
    """Creates containers under a monitor and talks to the monitors of running ones."""

    exits: ExitWatcher
    # The most one message read from the attach socket holds, and one written to it.
    attach_message_max: int
    attach_input_max: int

    async def check(self) -> object:
        """Refuses to start with a monitor binary the contract does not hold for."""
        ...

    async def create(self, spec: MonitorSpec, timeout: float) -> Created:
        """Runs `runtime create` under a new monitor; returns once the container exists."""
        ...

    def start(self) -> None:
        """Starts what the daemon does for running monitors (copying their logs)."""
        ...

    def close(self) -> None:
        """Stops it; the monitors and their containers keep running."""
        ...

    async def reopen_log(self, container_id: str, bundle: Path, log_dir: int, log_name: str, monitor_pid: int,
                         timeout: float) -> None:
        """Writes the container's log to a fresh file log_name in the directory open as log_dir (its
        path verified again by the caller); returns once it exists. FailedPrecondition when that
        is not the directory the log is written in."""
        ...

    def recover_log(self, container_id: str, bundle: Path, log_path: str) -> None:
        """After a daemon restart: writes on the container's log, what it wrote meanwhile first."""
        ...

    def log_written(self, container_id: str, timeout: float) -> bool:
        """Waits (at most timeout seconds) until what the container wrote before its exit is in its log."""
        ...

    def release(self, container_id: str, bundle: Path) -> None:
        """Forgets a container that is removed or whose create failed."""
        ...

    async def resize(self, bundle: Path, height: int, width: int) -> None:
        """Resizes the container's terminal."""
        ...

    def attach_socket(self, container_id: str) -> Path:
        """The SOCK_SEQPACKET socket that streams the container's stdio (attach): what a client
        writes there is the container's stdin; what it reads, messages attach_output() parses."""
        ...

    def attach_output(self, message: bytes) -> tuple[str, bytes] | None:
        """The stream ("stdout" or "stderr") of a message read from the attach socket, and the
        output it carries; None for a message of no stream."""
        ...

    def alive(self, monitor_pid: int, start_time: int) -> bool:
        """Whether the monitor process recorded at create time is still running."""
        ...

    def started_monitor(self, bundle: Path) -> tuple[int, int] | None:
        """(pid, start time) of the monitor a create left in bundle while it runs, for a create
        interrupted before its record held them; None when there is none."""
        ...

    def sweep_exits(self, known: set[str]) -> None:
        """Removes the exit files of containers not in known (left by removals a crash cut short)."""
        ...

    def oom_killed(self, bundle: Path) -> bool:
        """Whether the monitor saw the container's cgroup run out of memory."""
        ...
