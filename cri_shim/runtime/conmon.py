"""The conmon monitor (Debian's 2.1.6), driven through the contract CRI-O and Podman use.

create(): conmon gets a sync socket (_OCI_SYNCPIPE) and a start socket (_OCI_STARTPIPE)
passed with pass_fds (never preexec_fn); it waits for one byte on the start socket, double
forks, runs `runc create`, and writes one JSON line on the sync socket: {"data": <pid>} or
{"data": -1, "message": <runtime stderr>} (with --api-version 1). It then owns the
container: k8s-file log, attach socket <socket dir>/<id>/attach, control FIFO <bundle>/ctl
("1 h w" resize, "2 0 0" reopen log), exit code in <exit dir>/<id> and <bundle>/exit, and
<bundle>/oom when the container's memory cgroup reported an OOM kill (cgroup v1 eventfd;
2.1.6 is unreliable on v2, so the caller also checks memory.events itself).

The log: conmon writes its k8s-file records into a FIFO in the bundle, which the daemon reads,
joins into lines and writes into the log file (cri_shim.runtime.logcopy); conmon never opens the
log file itself. Every path it is given is absolute and the runtime's own. Containers made before
the daemon copied logs write their log file themselves, and are reopened through conmon.

stdin: conmon gives a container without -i (and without a terminal) its own open /dev/null,
which is the host's device node; a container's root could chown or chmod it through
/proc/self/fd/0 for the whole node. So every container without a terminal gets -i, a pipe, and
one that asked for no stdin has that pipe closed before it starts (_close_stdin): it reads EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

from cri_shim.cgroups.paths import SCOPE_PREFIX
from cri_shim.errors import FailedPrecondition, Internal
from cri_shim.linux import proc as procfs
from cri_shim.runtime import logcopy
from cri_shim.runtime.exits import ExitWatcher
from cri_shim.runtime.logcopy import LogCopier
from cri_shim.runtime.monitor import Created, MonitorSpec
from cri_shim.runtime.runc import error_message

log = logging.getLogger("cri_shim.runtime")

MIN_VERSION = (2, 1, 0)
# sun_path is 108 bytes with its NUL; conmon binds <socket dir>/<id>/attach.
SUN_PATH_MAX = 107
ATTACH = "attach"
REOPEN_LOG = b"2 0 0\n"

# The attach socket (conmon 2.1.6, src/ctr_stdio.c and src/conn_sock.c). Every message conmon
# sends is one read of the container's output behind a byte naming its stream (conmon's
# stdpipe_t: 2 stdout, 3 stderr; a terminal's output is all stdout), at most 8192+1 bytes; it
# sends only what arrives while the client is connected. What a client sends is written to the
# container's stdin as is, read 32 KiB per message (the rest of a longer one is lost). When a
# client shuts down its write side or hangs up, conmon closes the container's stdin unless it
# runs with --leave-stdin-open (stdin_once false). When the container exits, conmon writes out
# the rest of its output and closes every attach connection.
_ATTACH_STREAMS = {2: "stdout", 3: "stderr"}


async def version(binary: str) -> tuple[int, int, int]:
    """conmon's version, from `conmon --version`."""
    proc = await asyncio.create_subprocess_exec(
        binary, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    found = re.search(rb"conmon version (\d+)\.(\d+)\.(\d+)", out)
    if proc.returncode != 0 or not found:
        raise Internal(f"cannot tell the version of {binary}: {out.decode(errors='replace').strip()}")
    return int(found[1]), int(found[2]), int(found[3])


class ConmonMonitor:
    """Monitor implementation with one conmon process per container."""

    attach_message_max = 8192 + 1
    attach_input_max = 32 * 1024

    def __init__(self, binary: str, exit_dir: Path, socket_dir: Path, log_level: str = "info",
                 log_size_max: int = -1, max_log_line: int = 16384) -> None:
        self.binary = shutil.which(binary) or binary
        self.systemd_run = shutil.which("systemd-run") or "systemd-run"
        self.socket_dir = socket_dir
        self.log_level = log_level
        self.exits = ExitWatcher(exit_dir)
        self.logs = LogCopier(max_log_line, log_size_max)
        # An id is 64 hex characters; the attach socket path must still fit in sun_path.
        longest = len(str(socket_dir / ("0" * 64) / ATTACH))
        if longest > SUN_PATH_MAX:
            raise ValueError(f"socket dir {socket_dir} is too long for attach sockets ({longest} > {SUN_PATH_MAX} bytes)")

    async def check(self) -> tuple[int, int, int]:
        """Refuses a conmon older than the contract needs; returns its version."""
        found = await version(self.binary)
        if found < MIN_VERSION:
            wanted = ".".join(map(str, MIN_VERSION))
            raise Internal(f"{self.binary} is version {'.'.join(map(str, found))}, cri-shim needs {wanted} or later")
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return found

    def start(self) -> None:
        self.logs.start()

    def close(self) -> None:
        self.logs.close()

    def attach_socket(self, container_id: str) -> Path:
        return self.socket_dir / container_id / ATTACH

    def attach_output(self, message: bytes) -> tuple[str, bytes] | None:
        stream = _ATTACH_STREAMS.get(message[0]) if message else None
        return None if stream is None else (stream, message[1:])

    def args(self, spec: MonitorSpec) -> list[str]:
        """conmon's command line for creating spec's container: under the systemd driver
        behind systemd-run, which asks systemd (over D-Bus) for the scope
        cri-shim-conmon-<id>.scope in the pod's slice and execs conmon in it. systemd removes the
        scope once conmon, its last process, exits."""
        scope = []
        if spec.scope_slice is not None:
            scope = [self.systemd_run, "--scope", "--quiet", "--collect", f"--slice={spec.scope_slice}",
                     f"--unit={SCOPE_PREFIX}-conmon-{spec.container_id}", "--"]
        args = [
            *scope, self.binary, "--api-version", "1",
            "-b", str(spec.bundle), "-c", spec.container_id, "-u", spec.container_id, "-n", spec.name,
            "-r", spec.runtime.binary,
            "--exit-dir", str(self.exits.directory), "--persist-dir", str(spec.bundle),
            "-l", f"k8s-file:{spec.bundle / logcopy.FIFO}", "--no-sync-log",
            "--log-level", self.log_level,
            "-P", str(spec.bundle / "conmon.pid"), "-p", str(spec.bundle / "pidfile"),
            "--socket-dir-path", str(self.socket_dir),
        ]
        for arg in spec.runtime.global_args():
            args += ["--runtime-arg", arg]
        if spec.tty:
            args.append("-t")
        if spec.stdin or not spec.tty:  # a terminal is the container's stdin; else a pipe, never /dev/null
            args.append("-i")
            if spec.stdin and not spec.stdin_once:
                args.append("--leave-stdin-open")
        return args

    async def create(self, spec: MonitorSpec, timeout: float) -> Created:
        """Runs conmon, which runs `runc create`; the container's log is copied from conmon's FIFO
        from the start (the caller's release() ends the copy when the create fails)."""
        for binary in (self.binary, spec.runtime.binary, *([self.systemd_run] if spec.scope_slice else [])):
            if not os.path.isabs(binary):  # it would be looked up in the bundle
                raise Internal(f"{binary} is not found in PATH")
        sync_parent, sync_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        start_parent, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            "_OCI_SYNCPIPE": str(sync_child.fileno()),
            "_OCI_STARTPIPE": str(start_child.fileno()),
        }
        debug_log = open(spec.bundle / "conmon.log", "ab")
        try:
            await logcopy.hold(spec.bundle)
            self.logs.add(spec.container_id, spec.bundle, spec.log_dir, spec.log_name, spec.log_path)
            proc = await asyncio.create_subprocess_exec(
                *self.args(spec), cwd=spec.bundle, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=debug_log, stderr=debug_log, pass_fds=(sync_child.fileno(), start_child.fileno()),
            )
        finally:
            debug_log.close()
            sync_child.close()
            start_child.close()
        try:
            with start_parent, contextlib.suppress(ConnectionError):
                # A conmon that died before reading its start byte is reported by its exit code below.
                start_parent.sendall(b"0")
            rc = await asyncio.wait_for(proc.wait(), timeout)
            if rc != 0:
                raise Internal(f"conmon exited with {rc} before creating the container: {self._debug_tail(spec)}")
            line = await asyncio.wait_for(_read_line(sync_parent), timeout)
        except TimeoutError:
            raise Internal(f"conmon did not report the container within {timeout}s") from None
        finally:
            sync_parent.close()
        if not line:
            raise Internal(f"conmon closed the sync pipe without a result: {self._debug_tail(spec)}")
        try:
            reply = json.loads(line)
            pid = int(reply.get("data", -1))
        except (ValueError, TypeError, AttributeError):
            raise Internal(f"conmon sent an unreadable result: {line[:200]!r}") from None
        if pid <= 0:
            raise Internal(f"{spec.runtime.name} create failed: {error_message(str(reply.get('message', ''))) or self._debug_tail(spec)}")
        monitor_pid = int((spec.bundle / "conmon.pid").read_text().strip())
        if not spec.stdin and not spec.tty:
            await self._close_stdin(spec.container_id)
        return Created(pid=pid, monitor_pid=monitor_pid, monitor_start_time=procfs.start_time(monitor_pid) or 0)

    async def _close_stdin(self, container_id: str) -> None:
        """Ends the stdin pipe of a container that asked for none: conmon closes it when an
        attach client hangs up (no --leave-stdin-open), so one connects and hangs up before
        the container is started, and the container reads EOF as it would from /dev/null."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, str(self.attach_socket(container_id)))
            except OSError as exc:
                raise Internal(f"cannot close the container's stdin through conmon's attach socket: {exc.strerror}") from None

    def _debug_tail(self, spec: MonitorSpec) -> str:
        try:
            return (spec.bundle / "conmon.log").read_text(errors="replace")[-2000:].strip() or "(no output)"
        except OSError:
            return "(no output)"

    def _write_ctl(self, bundle: Path, message: bytes) -> None:
        try:
            fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FailedPrecondition("the container's monitor has no control FIFO (container not running)") from None
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise FailedPrecondition("the container's monitor is not running") from None
            raise
        try:
            os.write(fd, message)
        finally:
            os.close(fd)

    async def reopen_log(self, container_id: str, bundle: Path, log_dir: int, log_name: str, monitor_pid: int,
                         timeout: float) -> None:
        if (bundle / logcopy.FIFO).exists():
            self.logs.reopen(container_id, log_dir)
        else:
            await self._reopen_by_conmon(bundle, log_dir, log_name, monitor_pid, timeout)

    async def _reopen_by_conmon(self, bundle: Path, log_dir: int, log_name: str, monitor_pid: int, timeout: float) -> None:
        """A container made before the daemon copied logs: conmon, which runs in the log's directory,
        makes <log_name>.tmp there and renames it over log_name: check that log_dir is that
        directory, clear a <log_name>.tmp someone else put there (conmon would open it, following
        a symlink), then wait until the rename has happened."""
        try:
            cwd = procfs.cwd_identity(monitor_pid)
        except OSError:
            raise FailedPrecondition("the container's monitor is not running") from None
        here = os.fstat(log_dir)
        if cwd != (here.st_dev, here.st_ino):
            raise FailedPrecondition("the container's log directory was replaced after the container was created")
        try:
            os.unlink(f"{log_name}.tmp", dir_fd=log_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise FailedPrecondition(f"{log_name}.tmp in the log directory cannot be cleared: {exc.strerror}") from None
        before = _inode(log_dir, log_name)
        self._write_ctl(bundle, REOPEN_LOG)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while time.monotonic() < deadline:
            if _inode(log_dir, log_name) not in (before, None):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        raise Internal(f"conmon did not reopen {log_name} within {timeout}s")

    def recover_log(self, container_id: str, bundle: Path, log_path: str) -> None:
        self.logs.recover(container_id, bundle, log_path)

    def log_written(self, container_id: str, timeout: float) -> bool:
        return self.logs.drained(container_id, timeout)

    def release(self, container_id: str, bundle: Path) -> None:
        self.logs.release(container_id, bundle)

    async def resize(self, bundle: Path, height: int, width: int) -> None:
        self._write_ctl(bundle, f"1 {height} {width}\n".encode())

    def alive(self, monitor_pid: int, start_time: int) -> bool:
        return monitor_pid > 0 and procfs.is_alive(monitor_pid, start_time)

    def started_monitor(self, bundle: Path) -> tuple[int, int] | None:
        try:
            pid = int((bundle / "conmon.pid").read_text())
        except (OSError, ValueError):
            return None
        started = procfs.start_time(pid) if pid > 0 else None
        return None if started is None else (pid, started)

    def sweep_exits(self, known: set[str]) -> None:
        self.exits.sweep(known)

    def oom_killed(self, bundle: Path) -> bool:
        return (bundle / "oom").exists()


def _inode(directory: int, name: str) -> int | None:
    """The inode of name in the directory open as directory (None when absent); a symlink's own."""
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False).st_ino
    except FileNotFoundError:
        return None


async def _read_line(sock: socket.socket) -> bytes:
    """One newline-terminated line from a blocking-free socket on the loop (b"" on EOF)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    data = b""
    while b"\n" not in data:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]
