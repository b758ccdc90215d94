"""Exit files: conmon writes <exit dir>/<container id> with the exit code when a container ends.

ExitWatcher watches that directory with inotify (through ctypes, on the event loop: no
thread) and calls back with the container id; where inotify is unavailable it polls. The
files are the durable record of exits: they are written by conmon whether or not the daemon
runs, so after a restart read() finds the exits that happened meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cri_shim.linux import inotify

log = logging.getLogger("cri_shim.runtime")

POLL_INTERVAL = 0.5


@dataclass(frozen=True)
class ExitFile:
    """A recorded exit: the code and when the file was written (ns since the epoch)."""

    code: int
    finished_at: int


def read_exit(path: Path) -> ExitFile | None:
    """The exit recorded at path, or None when there is none (yet)."""
    try:
        text = path.read_text().strip()
        st = path.stat()
    except FileNotFoundError:
        return None
    try:
        return ExitFile(code=int(text), finished_at=st.st_mtime_ns)
    except ValueError:
        # A file conmon has created but not yet filled; the rename that completes it follows.
        return None


class ExitWatcher:
    """Calls callbacks with a container id whenever an exit file appears in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._callbacks: list[Callable[[str], None]] = []
        self._waiters: dict[str, list[asyncio.Future[ExitFile]]] = {}
        self._fd = -1
        self._poller: asyncio.Task[None] | None = None
        self._seen: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def path(self, container_id: str) -> Path:
        return self.directory / container_id

    def read(self, container_id: str) -> ExitFile | None:
        return read_exit(self.path(container_id))

    def forget(self, container_id: str) -> None:
        """Removes a container's exit file (on RemoveContainer)."""
        self.path(container_id).unlink(missing_ok=True)
        self._seen.discard(container_id)

    def sweep(self, known: set[str]) -> None:
        """Removes the exit files of containers not in known (left by removals a crash cut short)."""
        for exit_file in self.directory.iterdir():
            # "<id>.XXXXXX" is conmon writing an exit file right now: never touch those.
            if "." not in exit_file.name and exit_file.name not in known:
                exit_file.unlink(missing_ok=True)

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """callback(container_id) runs on the loop for every exit file that appears."""
        self._callbacks.append(callback)

    def start(self) -> None:
        """Begins watching (call from the running loop)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        loop = self._loop = asyncio.get_running_loop()
        fd = inotify.init()
        if fd >= 0 and inotify.add_watch(fd, str(self.directory), inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO) >= 0:
            self._fd = fd
            loop.add_reader(fd, self._on_inotify)
        else:
            if fd >= 0:
                os.close(fd)
            log.warning("inotify unavailable, polling exit files", extra={"dir": str(self.directory)})
            self._seen = {p.name for p in self.directory.iterdir() if "." not in p.name}
            self._poller = loop.create_task(self._poll())

    def close(self) -> None:
        if self._fd >= 0 and self._loop is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        for futures in self._waiters.values():
            for fut in futures:
                fut.cancel()
        self._waiters.clear()

    async def wait(self, container_id: str, timeout: float | None) -> ExitFile | None:
        """The container's exit once recorded, or None when timeout runs out first."""
        found = self.read(container_id)
        if found is not None:
            return found
        fut: asyncio.Future[ExitFile] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(container_id, []).append(fut)
        try:
            # The file may have landed between the read above and registering the future.
            found = self.read(container_id)
            if found is not None:
                return found
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(container_id, [])
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._waiters.pop(container_id, None)

    def _on_inotify(self) -> None:
        # conmon writes "<id>.XXXXXX" and renames it to "<id>": ids never hold a dot.
        names = [e.name for e in inotify.read_events(self._fd) if e.name and "." not in e.name]
        for name in dict.fromkeys(names):
            self._notify(name)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                names = {p.name for p in self.directory.iterdir() if "." not in p.name}
            except FileNotFoundError:
                continue
            for name in sorted(names - self._seen):
                self._notify(name)
            self._seen = names

    def _notify(self, container_id: str) -> None:
        found = self.read(container_id)
        if found is None:
            return
        for fut in self._waiters.get(container_id, []):
            if not fut.done():
                fut.set_result(found)
        for callback in self._callbacks:
            try:
                callback(container_id)
            except Exception:  # noqa: BLE001 - one failing subscriber must not stop the others
                log.exception("exit callback failed", extra={"container": container_id})
