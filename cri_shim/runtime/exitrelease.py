"""What an exited container no longer needs is released at its exit, off the RPC path.

containerd deletes a container's task (the runtime's state and cgroup) and unmounts its root
when the task exits, so its RemoveContainer only drops what is left. Doing all of it in
RemoveContainer made that call ten times slower here: `runc delete`, an overlay unmount that
waits for the kernel, the image store's lease. So once the runtime records a container's exit
(the exit watcher, a status poll or StopContainer, whichever sees it first), a task deletes the
runtime's state (`runc delete`, which removes the container's cgroup), unmounts the overlay
root and the image volumes and drops the root's lease on the image's layers (nothing mounts
them for it again). What must outlive the exit stays until RemoveContainer: the record, the
bundle (the spec verbose ContainerStatus reports, a console log), the log, and the writable
layer (upper and work; the filesystem usage reads it).

The task holds the container's record lock, as RemoveContainer does: a RemoveContainer that
comes first waits for it, one that came before finds nothing left to do for it (the record is
gone) and releases everything itself, so RemoveContainer leaves nothing behind whether the task
ran, runs, failed or never started. A container being removed (removing()) keeps the task to
the runtime delete: RemoveContainer unmounts and drops the lease with the rest of the root,
so it waits for the delete only, never for an unmount it would do itself. At start-up
reconcile() runs the task for every container recorded as exited: its exit was recorded while
the daemon was down, or a crash cut the task short. Every step tolerates what is already gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path

from cri_shim.api import api_pb2 as api
from cri_shim.image.imagevolumes import ImageVolumes
from cri_shim.image.rootfs import Rootfs
from cri_shim.runtime.record import ContainerRecord
from cri_shim.store.records import RecordStore

log = logging.getLogger("cri_shim.containers")


class ExitRelease:
    """Releases the runtime state, mounts and lease of containers as they exit."""

    def __init__(self, store: RecordStore[ContainerRecord], delete_state: Callable[[ContainerRecord], Awaitable[None]],
                 rootfs: Rootfs, image_volumes: ImageVolumes, rootfs_root: Path) -> None:
        self.store = store
        self.delete_state = delete_state
        self.rootfs = rootfs
        self.image_volumes = image_volumes
        self.rootfs_root = rootfs_root
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Containers a RemoveContainer is removing: their task stops after the runtime delete.
        self._removing: set[str] = set()

    def on_event(self, event_type: int, record: ContainerRecord) -> None:
        """The runtime's listener: an exit recorded starts the release (runs on the loop)."""
        if event_type == api.CONTAINER_STOPPED_EVENT:
            self._schedule(record.id)

    def _schedule(self, container_id: str) -> asyncio.Task[None]:
        task = self._tasks.get(container_id)
        if task is None:
            task = self._tasks[container_id] = asyncio.get_running_loop().create_task(self._release(container_id))
            task.add_done_callback(lambda _: self._tasks.pop(container_id, None))
        return task

    async def _release(self, container_id: str) -> None:
        container_dir = self.rootfs_root / container_id
        async with self.store.lock(container_id):
            record = self.store.get(container_id)
            if record is None or not record.finished_at:
                return  # removed meanwhile, with everything it had
            try:
                await self.delete_state(record)
                if container_id in self._removing:
                    return
                await self.image_volumes.release(container_dir)
                await self.rootfs.unmount(container_dir)
            except Exception as exc:  # noqa: BLE001 - RemoveContainer releases what is left
                log.warning("not released at exit, left to RemoveContainer",
                            extra={"container": container_id, "error": str(exc)})

    @contextlib.contextmanager
    def removing(self, container_id: str) -> Iterator[None]:
        """While RemoveContainer removes the container: a task that has not begun its unmount
        leaves it (and the lease) to the removal, which releases the whole root anyway."""
        self._removing.add(container_id)
        try:
            yield
        finally:
            self._removing.discard(container_id)

    async def settle(self, container_id: str) -> None:
        """Waits for the container's exit-time release, if one is under way (RemoveContainer
        calls this before it releases the rest, so that the two never race)."""
        task = self._tasks.get(container_id)
        if task is not None:
            await asyncio.shield(task)

    async def reconcile(self, records: Iterable[ContainerRecord]) -> None:
        """Start-up: releases what exited containers still hold."""
        tasks = [self._schedule(r.id) for r in records if r.finished_at]
        await asyncio.gather(*tasks)

    async def close(self) -> None:
        """Shutdown: lets the releases under way finish (what is not done is done at start-up)."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
