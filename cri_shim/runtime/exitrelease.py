"""An exited container's mounts are released at its exit, off the RPC path.

Unmounting an overlay waits for the kernel (an RCU grace period or more), and doing it in
RemoveContainer made that call several times slower than containerd's, whose shim unmounts a
container's rootfs when its task exits. Here, once the runtime records a container's exit (the
exit watcher, a status poll or StopContainer, whichever sees it first), the container's overlay
root and its image volumes are unmounted in the background. What must outlive the exit stays
until RemoveContainer: the writable layer (upper and work; ContainerStats and the filesystem
usage read it), the lease on the image's layers (the writable layer's whiteouts and copies are
only meaningful above them) and the directories themselves.

RemoveContainer waits for an unmount in flight (settle) and then releases whatever is left, so
it leaves nothing behind whether the exit-time unmount ran, runs, failed or never started. At
start-up reconcile() unmounts the roots of containers recorded as exited, whose exit was
recorded while the daemon was down or whose unmount a crash cut short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from cri_shim.api import api_pb2 as api
from cri_shim.image.imagevolumes import ImageVolumes
from cri_shim.image.rootfs import Rootfs
from cri_shim.store.records import ContainerRecord

log = logging.getLogger("cri_shim.containers")


class ExitRelease:
    """Unmounts the root filesystem and image volumes of containers as they exit."""

    def __init__(self, rootfs: Rootfs, image_volumes: ImageVolumes, rootfs_root: Path) -> None:
        self.rootfs = rootfs
        self.image_volumes = image_volumes
        self.rootfs_root = rootfs_root
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def on_event(self, event_type: int, record: ContainerRecord) -> None:
        """The runtime's listener: an exit recorded starts the unmount (runs on the loop)."""
        if event_type == api.CONTAINER_STOPPED_EVENT:
            self._schedule(record.id)

    def _schedule(self, container_id: str) -> asyncio.Task[None]:
        task = self._tasks.get(container_id)
        if task is None:
            task = self._tasks[container_id] = asyncio.get_running_loop().create_task(self._unmount(container_id))
            task.add_done_callback(lambda _: self._tasks.pop(container_id, None))
        return task

    async def _unmount(self, container_id: str) -> None:
        container_dir = self.rootfs_root / container_id
        try:
            await self.image_volumes.release(container_dir)
            await self.rootfs.unmount(container_dir)
        except Exception as exc:  # noqa: BLE001 - RemoveContainer releases what is left
            log.warning("rootfs not unmounted at exit, left to RemoveContainer",
                        extra={"container": container_id, "error": str(exc)})

    async def settle(self, container_id: str) -> None:
        """Waits for the container's exit-time unmount, if one is under way (RemoveContainer
        calls this before it releases the rest, so that the two never race)."""
        task = self._tasks.get(container_id)
        if task is not None:
            await asyncio.shield(task)

    async def reconcile(self, records: Iterable[ContainerRecord]) -> None:
        """Start-up: unmounts what exited containers still have mounted."""
        tasks = [self._schedule(r.id) for r in records if r.finished_at and self._mounted(r.id)]
        if tasks:
            log.info("unmounting the roots of containers that exited", extra={"count": len(tasks)})
            await asyncio.gather(*tasks)

    def _mounted(self, container_id: str) -> bool:
        container_dir = self.rootfs_root / container_id
        return self.rootfs.mounted(container_dir) or (container_dir / "images").is_dir()

    async def close(self) -> None:
        """Shutdown: lets the unmounts under way finish (what is not done is done at start-up)."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
