"""The daemon's side of container logs: conmon's records, read from a FIFO, joined, written.

conmon writes every read of a container's output as its own record (cri_shim.runtime.logjoin),
so it does not write the CRI log file itself: it writes its k8s-file records into a FIFO in the
bundle (<bundle>/log.fifo), and one thread of the daemon reads every container's FIFO, joins the
records into lines, and writes the log file, as containerd's CRI plugin does with its shims'
FIFOs. The file is opened beneath the log directory's descriptor without following symlinks
(cri_shim.runtime.logfile); ReopenContainerLog and runtime.log_size_max_bytes switch files here.

Surviving the daemon (a restart, kill -9):
- besides conmon and the daemon, a small process of its own holds each FIFO's read end (hold():
  a background `sh` waiting for a line in a second FIFO, <bundle>/log.ack, about 0.1 MB), so that
  conmon's writes never fail for want of a reader: while the daemon is down the pipe fills
  (64 KiB) and then conmon, and so the container, blocks on it until the daemon is back and reads
  on, as containerd's containers block on their FIFOs;
- a container that exits meanwhile leaves what it wrote last in the pipe, which the holder keeps
  after conmon has exited, until the daemon has read it to the end (or the container is removed)
  and writes the holder its line; the holder reads nothing the container wrote;
- at start-up the daemon opens every container's FIFO again by name and reads on (recover()).
The pipes keep the kernel's default size: enlarging them counts against the user's pipe pages
(fs.pipe-user-pages-soft), past which every new pipe of the user is cut to one page.

Killed, the daemon loses what it had read from a FIFO and not yet written, and each stream's
unfinished line it held (at most the maximum line size).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cri_shim.errors import FailedPrecondition, Internal
from cri_shim.runtime import logfile
from cri_shim.runtime.logjoin import Joiner

log = logging.getLogger("cri_shim.runtime")

FIFO = "log.fifo"
ACK = "log.ack"
READ_SIZE = 64 * 1024
# Reads of one FIFO before the thread turns to the others.
READS_PER_TURN = 4


# The holder: a shell in the background (reparented to init once the outer one exits), with the
# FIFO's read end as its stdout and log.ack (read-write, so never at its end) as fd 3, until a line
# comes. It starts a session of its own, away from the daemon's signals.
HOLDER = ("/bin/sh", "-c", "exec 3<&0; read -r _ <&3 &")


async def hold(bundle: Path) -> None:
    """Makes the bundle's two FIFOs and starts the process that holds log.fifo open until the
    daemon has read it to the end (it writes a line into log.ack then)."""
    os.mkfifo(bundle / FIFO, 0o600)
    os.mkfifo(bundle / ACK, 0o600)
    keep = os.open(bundle / FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        ack = os.open(bundle / ACK, os.O_RDWR | os.O_CLOEXEC)
        try:
            proc = await asyncio.create_subprocess_exec(*HOLDER, stdin=ack, stdout=keep, stderr=asyncio.subprocess.DEVNULL,
                                                        start_new_session=True)
        finally:
            os.close(ack)
    finally:
        os.close(keep)
    if await proc.wait() != 0:
        raise Internal(f"the holder of the container's log FIFO did not start (exit status {proc.returncode})")


@dataclass(eq=False)
class _Pipe:
    """One container's FIFO and log file."""

    container_id: str
    fifo: int
    ack: int  # the write end of log.ack (-1 when nobody waits on it)
    joiner: Joiner
    path: str  # the log file, for messages
    directory: int  # the log file's directory (-1 when it cannot be opened)
    name: str
    file: int = -1
    size: int = 0
    failed: bool = False  # a write failed (its output is dropped): said once until a new file
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)


class LogCopier:
    """One thread copying every container's log FIFO into its log file."""

    def __init__(self, max_line: int, size_max: int) -> None:
        self.max_line = max_line
        self.size_max = size_max  # -1: no limit
        self._pipes: dict[str, _Pipe] = {}
        self._by_fd: dict[int, _Pipe] = {}
        self._lock = threading.Lock()
        self._epoll: select.epoll | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1

    # -- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="log-copier", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops reading; the FIFOs stay held by their holders, and are read on at the next start."""
        if self._thread is None:
            return
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        with self._lock:
            for pipe in list(self._pipes.values()):
                self._forget(pipe, ack=False)
        assert self._epoll is not None
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        assert self._epoll is not None
        while True:
            for fd, _ in self._epoll.poll():
                if fd == self._wake_r:
                    return
                pipe = self._by_fd.get(fd)
                if pipe is not None:
                    self._pump(pipe)

    # -- containers -----------------------------------------------------------------------

    def add(self, container_id: str, bundle: Path, directory: int, name: str, path: str) -> None:
        """Starts copying a new container's FIFO (made by hold()) into the log file name in the
        directory open as directory (a descriptor the copier duplicates)."""
        fifo = os.open(bundle / FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        ack = os.open(bundle / ACK, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        directory = os.dup(directory)
        pipe = _Pipe(container_id, fifo, ack, Joiner(self.max_line), path, directory, name)
        try:
            pipe.file = logfile.open_append(directory, name, path)
            pipe.size = os.fstat(pipe.file).st_size
        except BaseException:
            for fd in (fifo, ack, directory):
                os.close(fd)
            raise
        self._register(pipe)

    def recover(self, container_id: str, bundle: Path, path: str) -> None:
        """After a daemon restart: reads on the container's FIFO, if it has one, into the file at
        path (opened again without following symlinks; when it cannot be, output is dropped)."""
        try:
            fifo = os.open(bundle / FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # made before the daemon copied logs, or no bundle any more
        if not stat.S_ISFIFO(os.fstat(fifo).st_mode):
            os.close(fifo)
            return
        try:
            ack = os.open(bundle / ACK, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # ENXIO: no holder waits any more
            ack = -1
        pipe = _Pipe(container_id, fifo, ack, Joiner(self.max_line), path, -1, os.path.basename(path))
        try:
            with logfile.for_reopen(path) as (directory, name):
                pipe.file = logfile.open_append(directory, name, path)
                pipe.directory = os.dup(directory)
            pipe.size = os.fstat(pipe.file).st_size
        except Exception as exc:  # noqa: BLE001 - the container must not block on its log
            log.warning("container log cannot be opened again; its output is dropped",
                        extra={"container": container_id, "path": path, "error": str(exc)})
        self._register(pipe)
        # A writer gone before this open shows no hangup: read now, which tells the end apart.
        self._pump(pipe)

    def _register(self, pipe: _Pipe) -> None:
        with self._lock:
            old = self._pipes.pop(pipe.container_id, None)
            if old is not None:
                self._forget(old, ack=False)
            self._pipes[pipe.container_id] = pipe
            self._by_fd[pipe.fifo] = pipe
            assert self._epoll is not None
            self._epoll.register(pipe.fifo, select.EPOLLIN)

    def release(self, container_id: str, bundle: Path) -> None:
        """Forgets a container (removed, or its create failed): lets its holder end, also one the
        daemon no longer knew of."""
        with self._lock:
            pipe = self._pipes.pop(container_id, None)
            if pipe is not None:
                self._forget(pipe, ack=True)
                return
        try:
            ack = os.open(bundle / ACK, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # nobody waits on it
        try:
            _ack(ack)
        finally:
            os.close(ack)

    def drained(self, container_id: str, timeout: float) -> bool:
        """Waits until the container's output is all in its log (its monitor closed the FIFO)."""
        pipe = self._pipes.get(container_id)
        return pipe is None or pipe.done.wait(timeout)

    def reopen(self, container_id: str, directory: int) -> None:
        """ReopenContainerLog: a fresh file at the log's name, if directory (the log's directory,
        just opened again by path) is still the one the log was written in."""
        pipe = self._pipes.get(container_id)
        if pipe is None:
            raise FailedPrecondition("the container's log is no longer written (its monitor has exited)")
        with pipe.lock:
            if pipe.directory < 0 or not _same_file(os.fstat(pipe.directory), os.fstat(directory)):
                raise FailedPrecondition("the container's log directory was replaced after the container was created")
            self._switch(pipe, logfile.open_fresh(pipe.directory, pipe.name, pipe.path))

    # -- copying --------------------------------------------------------------------------

    def _pump(self, pipe: _Pipe) -> None:
        with pipe.lock:
            if pipe.fifo < 0:
                return
            out: list[bytes] = []
            ended = False
            for _ in range(READS_PER_TURN):
                try:
                    chunk = os.read(pipe.fifo, READ_SIZE)
                except BlockingIOError:
                    break
                if not chunk:
                    ended = True
                    break
                # Read on until the pipe is empty even after a short read: a FIFO whose writer
                # left before the daemon opened it shows no hangup, only this read's end.
                out += pipe.joiner.feed(chunk)
            if ended:
                out += pipe.joiner.finish()
            if out:
                self._write(pipe, out)
        if ended:
            with self._lock:
                if self._pipes.get(pipe.container_id) is pipe:
                    del self._pipes[pipe.container_id]
                self._forget(pipe, ack=True)

    def _write(self, pipe: _Pipe, records: list[bytes]) -> None:
        if pipe.file < 0:
            return
        data = b"".join(records)
        if self.size_max > 0:
            # An element may hold many whole records (the Joiner passes runs of F records on as
            # one): the cap is kept record by record, at the last newline that still fits.
            size = pipe.size
            while data and len(data) > self.size_max - size:
                fit = data.rfind(b"\n", 0, max(self.size_max - size, 0)) + 1
                if not fit and size > 0:
                    self._restart_file(pipe)  # should that fail, the full file takes another cap's worth
                    size = 0
                    continue
                fit = fit or data.find(b"\n") + 1 or len(data)  # one record past the cap: alone in the file
                self._write_all(pipe, data[:fit])
                data = data[fit:]
                size += fit
        self._write_all(pipe, data)

    def _write_all(self, pipe: _Pipe, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(pipe.file, view)
                view = view[written:]
                pipe.size += written
        except OSError as exc:
            if not pipe.failed:
                log.warning("container log write failed; output is dropped while writes fail",
                            extra={"container": pipe.container_id, "path": pipe.path, "error": exc.strerror})
                pipe.failed = True

    def _restart_file(self, pipe: _Pipe) -> None:
        """runtime.log_size_max_bytes reached: the log is started afresh (conmon's --log-size-max)."""
        try:
            self._switch(pipe, logfile.open_fresh(pipe.directory, pipe.name, pipe.path))
        except Exception as exc:  # noqa: BLE001 - keep writing the full file rather than block
            log.warning("container log cannot be started afresh", extra={"container": pipe.container_id, "error": str(exc)})

    @staticmethod
    def _switch(pipe: _Pipe, fd: int) -> None:
        if pipe.file >= 0:
            os.close(pipe.file)
        pipe.file, pipe.size, pipe.failed = fd, 0, False

    def _forget(self, pipe: _Pipe, ack: bool) -> None:
        """Closes the pipe's descriptors (called with self._lock held); ack lets its holder end."""
        with pipe.lock:
            if pipe.fifo >= 0:
                assert self._epoll is not None
                self._epoll.unregister(pipe.fifo)
                self._by_fd.pop(pipe.fifo, None)
                os.close(pipe.fifo)
                pipe.fifo = -1
            if pipe.ack >= 0:
                if ack:
                    _ack(pipe.ack)
                os.close(pipe.ack)
                pipe.ack = -1
            for fd in (pipe.file, pipe.directory):
                if fd >= 0:
                    os.close(fd)
            pipe.file = pipe.directory = -1
        pipe.done.set()


def _ack(fd: int) -> None:
    """The line the holder waits for (already there, or nobody reading: nothing to do)."""
    try:
        os.write(fd, b"\n")
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EPIPE):
            raise


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
