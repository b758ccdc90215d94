"""The daemon's end of the layer helper's fork server (cri_shim.image.tarapply).

One server process, started when a pull finds layers to apply (it starts while they download)
and ended when no layer has been applied for IDLE_SECONDS: a run of pulls pays its start-up
once (it used to be paid once a layer, 80-130 ms each, more than the unpacking of most layers),
and an idle daemon carries no helper. Each layer is a Job: the request goes over the control socket with the write end of a
pipe the job's child reports on, so jobs of any number of pulls (and of any event loop: the
tests run each apply in a loop of its own) never share a stream.

Nothing here blocks for long: a request is one datagram on a local socket; the server is started
with one spawn (its interpreter starts while the caller goes on), and an idle one is ended from
a timer thread.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

from cri_shim.errors import Internal

SERVER = [sys.executable, "-m", "cri_shim.image.tarapply"]
IDLE_SECONDS = 60.0
REPORT_LIMIT = 1 << 20  # the longest report line: a refusal naming a long path


class Unpacker:
    """Starts the fork server on demand, hands it jobs, and ends it once idle. One a process
    (SHARED): the server keeps no state between jobs, whatever store they are for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the timer thread ends the server while the loop may start jobs
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._ids = itertools.count(1)
        self._active = 0
        self._timer: threading.Timer | None = None

    async def start(self, blob: str, root: str, lowers: list[str]) -> Job:
        """Sends one layer to the server (started or restarted if need be); the Job reads its report.

        The report pipe is connected to this loop before the request goes: a cancellation can
        come only before there is a child, never leave one nobody reads or stops."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            reader = asyncio.StreamReader(limit=REPORT_LIMIT)
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0))
            try:
                job_id = self._send(blob, root, lowers, write_fd)
            except BaseException:
                transport.close()
                raise
        finally:
            os.close(write_fd)
        return Job(self, job_id, reader, transport)

    def prestart(self) -> None:
        """Starts the server ahead of the first job, so that its interpreter starts while the
        layers download instead of after; ended when idle as after a job, should no job come."""
        with self._lock:
            self._server()
            if self._active == 0:
                self._arm()

    def close(self) -> None:
        """Ends the server (its children die with it); the next job starts a new one."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            detached = self._detach()
        self._end(*detached)

    def _send(self, blob: str, root: str, lowers: list[str], report_fd: int) -> int:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            job_id = next(self._ids)
            request = json.dumps({"id": job_id, "blob": blob, "dir": root, "lowers": lowers}).encode()
            try:
                socket.send_fds(self._server(), [request], [report_fd])
            except (BrokenPipeError, ConnectionResetError):  # it died since it was last used: once more, on a new one
                self._end(*self._detach())
                socket.send_fds(self._server(), [request], [report_fd])
            self._active += 1
            return job_id

    def _server(self) -> socket.socket:
        """The control socket of a live server (under the lock)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._end(*self._detach())
        if self._control is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._proc = subprocess.Popen(SERVER, stdin=theirs, stdout=subprocess.DEVNULL, close_fds=True)
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            self._control = ours
        return self._control

    def _detach(self) -> tuple[subprocess.Popen[bytes] | None, socket.socket | None]:
        """Takes the server out of use (under the lock), for _end outside it."""
        detached = self._proc, self._control
        self._proc, self._control = None, None
        return detached

    @staticmethod
    def _end(proc: subprocess.Popen[bytes] | None, control: socket.socket | None) -> None:
        """Closes the control socket, which ends the server, and reaps it."""
        if control is not None:
            control.close()
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _kill(self, job_id: int) -> None:
        with self._lock:
            if self._control is None:
                return  # the server is gone, and its children with it
            try:
                self._control.send(json.dumps({"kill": job_id}).encode())
            except OSError:
                pass  # likewise

    def _done(self) -> None:
        """A job ended: when it was the last one, the server is ended after IDLE_SECONDS without another."""
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._control is not None:
                self._arm()

    def _arm(self) -> None:
        """(Re)starts the idle countdown (under the lock)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(IDLE_SECONDS, self._idle)
        self._timer.daemon = True
        self._timer.start()

    def _idle(self) -> None:
        with self._lock:
            if self._active or self._timer is not threading.current_thread():
                return  # a job started meanwhile (it cancelled or replaced this timer)
            self._timer = None
            detached = self._detach()
        self._end(*detached)


SHARED = Unpacker()


class Job:
    """One layer being applied by a child of the server: its report, and a way to stop it."""

    def __init__(self, owner: Unpacker, job_id: int, reader: asyncio.StreamReader, transport: asyncio.BaseTransport) -> None:
        self.owner = owner
        self.id = job_id
        self._reader = reader
        self._transport: asyncio.BaseTransport | None = transport

    async def result(self, progress: Callable[[int], None]) -> dict:
        """The child's result line, after it exited; Internal with its reason if it refused or failed."""
        result: dict = {}
        reason = ""
        async for line in self._reader:
            text = line.decode(errors="replace").strip()
            if text.startswith("progress "):
                progress(int(text.split()[1]))
            elif text.startswith("{"):
                result = json.loads(text)
            elif text:
                reason = text
        self._close()
        if not result:
            raise Internal(reason or "layer helper ended without a result (see the daemon's log)")
        return result

    async def stop(self) -> None:
        """Kills the child and waits until it is gone (its report pipe ends), so that its
        directory can be removed; nothing to do once it ended."""
        if self._transport is None:
            return
        self.owner._kill(self.id)
        while await self._reader.read(REPORT_LIMIT):
            pass
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            self.owner._done()
