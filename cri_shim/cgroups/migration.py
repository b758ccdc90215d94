"""Keeps the kernel's cgroup migration lock on its fast path while containers are created.

Every process runc puts into a cgroup (a write to cgroup.procs, once per hierarchy) takes the
kernel's one global cgroup_threadgroup_rwsem for writing. It is a per-CPU rwsem: a writer that
finds it idle first waits a whole RCU grace period for the readers (forks and exits) to switch
to their slow path, and the lock stays switched only until a grace period after its last
writer. Grace periods are slow on some hosts (11 ms a wait on the benchmark machine, a 250 Hz
kernel with lazy RCU), and there that one wait was a third of a `runc create`.

The kernel's own remedy is the cgroup mount option favordynmods, which keeps the lock switched
for good, at some cost to every fork and exit on the host: a node setting, not ours to make.
What the runtime can do is pay the wait early and off the critical path. While a create is in
flight, a thread writes the daemon's own PID into the cgroup it already belongs to, every few
milliseconds: a migration that moves nothing but takes the lock. The first write waits out the
grace period while the rootfs is mounted, the spec written and conmon started; by the time runc
moves the container's init the lock is already switched and its writes go straight through.
Readers take their slow path only for the span of a create, as they would for runc's own writes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("cri_shim.cgroups")

# Under the grace periods that make the wait worth saving (11 ms here), so that the lock does not
# go idle between two writes; where grace periods are shorter, so is what an idle lock costs.
# A write of an unchanged membership takes about 4 us in the kernel; each wakes this thread,
# which wants the GIL, so they are not made more often than they need to be.
INTERVAL_SECONDS = 0.005


class MigrationWarmer:
    """Holds the cgroup migration lock's fast path while at least one caller is inside held().

    procs_file is a cgroup.procs file of the daemon's own cgroup (hierarchy.own_procs_file);
    None, or a file that cannot be opened, makes held() a no-op.
    """

    def __init__(self, procs_file: str | None, interval: float = INTERVAL_SECONDS) -> None:
        self.procs_file = procs_file
        self.interval = interval
        self._holders = 0
        self._closed = False
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """The lock is kept warm from entry until the last holder leaves."""
        if self.procs_file is None:
            yield
            return
        with self._wake:
            self._holders += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(self.procs_file,), name="cgroup-warmer", daemon=True)
                self._thread.start()
            self._wake.notify()
        try:
            yield
        finally:
            with self._wake:
                self._holders -= 1

    def close(self) -> None:
        """Ends the thread (held() is a no-op afterwards)."""
        with self._wake:
            self._closed = True
            self.procs_file = None
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.info("cgroup migration lock not warmed", extra={"file": path, "error": exc.strerror})
            with self._wake:
                self.procs_file = None
            return
        pid = str(os.getpid()).encode()
        refused = False
        try:
            while True:
                with self._wake:
                    while self._holders == 0 and not self._closed:
                        self._wake.wait()
                    if self._closed:
                        return
                try:
                    os.write(fd, pid)
                except OSError as exc:
                    # The kernel checks the move after taking the lock: a refused write warms it too.
                    if not refused:
                        log.debug("cgroup.procs write refused", extra={"file": path, "error": exc.strerror})
                        refused = True
                time.sleep(self.interval)
        finally:
            os.close(fd)
