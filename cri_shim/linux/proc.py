"""Process identity and signalling without pid-reuse races: start times and pidfds.

A pid recorded on disk may belong to another process after a restart. A process is named by
(pid, start time in clock ticks since boot, field 22 of /proc/<pid>/stat); a pidfd opened and
then checked against that start time refers to the recorded process for as long as it is held.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator


def start_time(pid: int) -> int | None:
    """The start time of pid in clock ticks since boot, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])


def namespace_path(pid: int | str, kind: str) -> str:
    """The path naming a process's namespace of a kind (net, pid, ...; pid "thread-self" for the
    calling thread's)."""
    return f"/proc/{pid}/ns/{kind}"


def write_id_map(pid: int, name: str, text: bytes) -> None:
    """Writes the uid_map or gid_map (name) of the user namespace pid is in; the kernel takes it once."""
    with open(f"/proc/{pid}/{name}", "wb") as f:
        f.write(text)


def status_mask(name: str, pid: int | str = "self") -> int:
    """A hexadecimal mask of /proc/<pid>/status (CapEff, CapBnd, ...); 0 when it has none."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1], 16)
    return 0


def oom_score_adj(pid: int | str = "self") -> int | None:
    """The process's oom_score_adj, None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/oom_score_adj") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def cwd_identity(pid: int) -> tuple[int, int]:
    """(device, inode) of the process's working directory; OSError when the process is gone."""
    st = os.stat(f"/proc/{pid}/cwd")
    return st.st_dev, st.st_ino


def _each(name: str) -> Iterator[tuple[int, bytes]]:
    """(pid, contents of /proc/<pid>/<name>) for every process that still exists when read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{name}", "rb") as f:
                yield int(entry), f.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue


def with_environment(entry: str) -> list[int]:
    """Pids of the processes whose environment holds entry ("KEY=value") exactly."""
    needle = entry.encode()
    return [pid for pid, environ in _each("environ") if needle in environ.split(b"\0")]


def is_alive(pid: int, started: int) -> bool:
    """Whether the process that started at `started` still runs under pid."""
    return start_time(pid) == started


def open_pidfd(pid: int, started: int) -> int | None:
    """A pidfd for the recorded process, or None when it has exited (or the pid was reused)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if start_time(pid) != started:
        os.close(fd)
        return None
    return fd


def send_signal(pid: int, started: int, sig: int) -> bool:
    """Sends sig to the recorded process through a pidfd (never to a process that reused its
    pid); False when it has exited."""
    fd = open_pidfd(pid, started)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    return True


async def kill_and_wait(pid: int, started: int, timeout: float = 10.0) -> None:
    """SIGKILLs the recorded process and waits until it has exited; already gone is fine."""
    fd = open_pidfd(pid, started)
    if fd is None:
        return
    try:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            return
        await wait_pidfd(fd, timeout)
    finally:
        os.close(fd)


def children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is pid."""
    found = []
    for child, stat in _each("stat"):
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[1]) == pid:
            found.append(child)
    return found


async def kill_tree(pid: int, started: int, timeout: float = 10.0) -> None:
    """SIGKILLs the recorded process and its descendants, deepest first, waiting for each.

    For a monitor stuck with a runtime call under it: killing only the monitor would leave the
    call running, reparented to init, out of reach of anything that knows it.
    """
    if not is_alive(pid, started):
        return
    for child in children(pid):
        child_started = start_time(child)
        if child_started is not None:
            await kill_tree(child, child_started, timeout)
    await kill_and_wait(pid, started, timeout)


async def wait_pidfd(fd: int, timeout: float) -> None:
    """Waits until the process behind a pidfd has exited (the fd turns readable)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        loop.remove_reader(fd)
