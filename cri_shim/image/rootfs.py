"""Container root filesystems: an overlay of the image's layers with a writable layer on top.

The API the container code calls (all idempotent, safe to repeat after a crash):

    rootfs = Rootfs(store)
    path = await rootfs.prepare(image_ref, container_dir)   # -> container_dir/rootfs, mounted
    await rootfs.unmount(container_dir)                     # unmount, unlease (an exited container's)
    await rootfs.release(container_dir)                     # unmount, remove upper/work/rootfs
    used_bytes, inodes = await rootfs.writable_usage(container_dir)
    rootfs.mounted(container_dir) -> bool
    await rootfs.mount_image(record, target)                # the image alone, read-only, at target
    await rootfs.release_image(target)

container_dir belongs to the caller (it should be on the same disk as the image store, not
tmpfs, since the writable layer lives in it: container_dir/upper and container_dir/work).
prepare() records a lease on the image's layers before mounting, so RemoveImage (allowed
while containers run) leaves layers in use in place; release() drops it. The layers
themselves are shared read-only lower directories.

overlayfs takes all options in one page (4096 bytes): with many layers or long paths the
lower directories are passed as /proc/self/fd/N of descriptors opened for the mount call.

The root of a container in a user namespace, and each image volume of it, is an overlay over
idmapped layers: each layer is an idmapped copy (cri_shim.linux.idmap) attached under
<state_dir>/images/idmapped only while the overlay is mounted (overlayfs before Linux 6.15 takes
no detached layer), held by the overlay alone afterwards, so nothing but the overlay stays
mounted and it unmounts as any other; copies a crash left attached go at start-up (recover). overlayfs cannot be
idmapped itself, but over idmapped layers it shows image files with the pod's host ids (an image
file of uid 1000 is the pod's uid 1000), copies them up with those ids, and writes new files
with the writer's host ids; its upper directory is the pod root's, so that / is root's inside.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from cri_shim.errors import Internal, InvalidArgument
from cri_shim.idmappings import IdMappings
from cri_shim.image.records import ImageRecord
from cri_shim.image.store import ImageStore
from cri_shim.image.usage import disk_usage
from cri_shim.linux import idmap, kernel

log = logging.getLogger("cri_shim.image.rootfs")

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
_MS_RDONLY = 1
_PAGE = os.sysconf("SC_PAGE_SIZE")
_HAS_INDEX = kernel.module_parameter("overlay", "index") is not None


def _mount_overlay(target: Path, lowers: list[Path], upper: Path | None = None, work: Path | None = None) -> None:
    """An overlay of lowers (topmost first) at target: writable through upper and work, or read-only
    (MS_RDONLY, no writable layer at all) without them."""
    writable = [upper, work] if upper is not None and work is not None else []
    tail = f",upperdir={upper},workdir={work}" + (",index=off" if _HAS_INDEX else "") if writable else ""
    flags = 0 if writable else _MS_RDONLY
    for path in [*lowers, *writable]:
        if any(c in str(path) for c in ",:\n"):
            raise InvalidArgument(f"overlay paths must not contain ',' or ':': {path}")
    fds: list[int] = []
    try:
        options = "lowerdir=" + ":".join(str(p) for p in lowers) + tail
        if len(options) >= _PAGE:
            fds = [os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in lowers]
            options = "lowerdir=" + ":".join(f"/proc/self/fd/{fd}" for fd in fds) + tail
        if len(options) >= _PAGE:
            raise Internal(f"image has {len(lowers)} layers, more than one overlay mount can stack")
        if _libc.mount(b"overlay", os.fsencode(target), b"overlay", flags, options.encode()) != 0:
            err = ctypes.get_errno()
            raise Internal(f"mounting an overlay at {target}: {os.strerror(err)}")
    finally:
        for fd in fds:
            os.close(fd)


def _mount_idmapped(target: Path, lowers: list[Path], userns: tuple[str, IdMappings] | None, staging: Path,
                    upper: Path | None = None, work: Path | None = None) -> None:
    """_mount_overlay, over copies of the lowers idmapped through the pinned user namespace
    userns[0] when there is one, attached under staging while the overlay is mounted."""
    if userns is None:
        _mount_overlay(target, lowers, upper, work)
        return
    with idmap.attached([str(lower) for lower in lowers], userns[0], staging) as copies:
        _mount_overlay(target, copies, upper, work)


def _unmount(target: Path) -> None:
    if _libc.umount2(os.fsencode(target), 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return  # not mounted
    if err == errno.EBUSY and _libc.umount2(os.fsencode(target), _MNT_DETACH) == 0:
        return
    raise Internal(f"unmounting {target}: {os.strerror(err)}")


class Rootfs:
    """Prepares and releases the overlay root filesystems of containers."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        # Where idmapped layers are attached while an overlay over them is mounted.
        self.staging = store.root / "idmapped"

    def recover(self) -> None:
        """Releases idmapped layers a crash left attached (no mount is in progress at start-up)."""
        idmap.release_all(self.staging)

    @staticmethod
    def mounted(container_dir: Path) -> bool:
        return os.path.ismount(container_dir / "rootfs")

    async def prepare(self, image_ref: str, container_dir: Path, userns: tuple[str, IdMappings] | None = None) -> Path:
        """Mounts the image (by ID, tag or digest) at container_dir/rootfs and returns that path;
        with userns (the pinned namespace and its mappings), over layers idmapped through it."""
        target = container_dir / "rootfs"
        if self.mounted(container_dir):
            return target
        record = self.store.resolve(image_ref)
        await self._leased_mount(record, container_dir, partial(self._mount, record.chain_ids, container_dir, userns),
                                 self.release)
        log.info("rootfs mounted", extra={"image": record.image_id, "path": str(target), "layers": len(record.chain_ids)})
        return target

    def _mount(self, chains: list[str], container_dir: Path, userns: tuple[str, IdMappings] | None) -> None:
        upper, work, target = container_dir / "upper", container_dir / "work", container_dir / "rootfs"
        container_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        for d in (upper, work, target):
            d.mkdir(exist_ok=True, mode=0o755)
        lowers = [self.store.layers.diff_dir(c) for c in reversed(chains)]
        if not lowers:
            lowers = [self.store.empty]
        if userns is not None:
            os.chown(upper, *userns[1].root())
        _mount_idmapped(target, lowers, userns, self.staging, upper, work)

    def mount_empty(self, container_dir: Path, userns: tuple[str, IdMappings]) -> None:
        """Mounts at container_dir/rootfs, as prepare() mounts a container's root over its layers,
        the store's empty layer alone, idmapped through userns: what the user-namespace probe
        (cri_shim.runtime.features) makes, in a mount namespace of its own."""
        self._mount([], container_dir, userns)

    async def unmount(self, container_dir: Path) -> None:
        """Unmounts the overlay of an exited container and drops its lease (nothing mounts those
        layers for it again); its writable layer stays for release() to remove. Nothing mounted
        or leased is not an error."""
        await asyncio.to_thread(_unmount, container_dir / "rootfs")
        await self._unlease(container_dir)

    async def release(self, container_dir: Path) -> None:
        """Unmounts and removes the rootfs and writable layer; nothing there is not an error."""
        def cleanup() -> None:
            target = container_dir / "rootfs"
            if target.exists():
                _unmount(target)
            for name in ("rootfs", "upper", "work"):
                shutil.rmtree(container_dir / name, ignore_errors=True)

        await asyncio.to_thread(cleanup)
        await self._unlease(container_dir)

    async def mount_image(self, record: ImageRecord, target: Path, userns: tuple[str, IdMappings] | None = None) -> None:
        """Mounts the image's layers read-only at target: an overlay with no writable layer, its
        layers leased under target as a rootfs's are under its container directory; idmapped
        through userns as prepare() does."""
        if os.path.ismount(target):
            return
        await self._leased_mount(record, target, partial(self._mount_readonly, record.chain_ids, target, userns),
                                 self.release_image)
        log.info("image mounted read-only", extra={"image": record.image_id, "path": str(target)})

    def _mount_readonly(self, chains: list[str], target: Path, userns: tuple[str, IdMappings] | None) -> None:
        target.mkdir(parents=True, exist_ok=True, mode=0o755)
        # Without an upper layer overlayfs wants two lower ones: the empty directory is the bottom one.
        lowers = [self.store.layers.diff_dir(c) for c in reversed(chains)] + [self.store.empty]
        _mount_idmapped(target, lowers, userns, self.staging)

    async def release_image(self, target: Path) -> None:
        """Unmounts and removes what mount_image made at target; nothing there is not an error."""
        def cleanup() -> None:
            if target.exists():
                _unmount(target)
                target.rmdir()

        await asyncio.to_thread(cleanup)
        await self._unlease(target)

    async def _leased_mount(self, record: ImageRecord, leased_dir: Path, mount: Callable[[], None],
                            release: Callable[[Path], Awaitable[None]]) -> None:
        """Leases the image's layers under leased_dir, then mounts (in a thread); when the mount
        fails or is cancelled, release undoes both."""
        await self.store.lease_layers(leased_dir, record)
        try:
            await asyncio.to_thread(mount)
        except BaseException:
            await release(leased_dir)
            raise

    async def _unlease(self, leased_dir: Path) -> None:
        chains = await self.store.unlease(leased_dir)
        if chains:
            # Layers of an image removed while they were mounted go now.
            await self.store.discard_unused(chains, [])

    async def writable_usage(self, container_dir: Path) -> tuple[int, int]:
        """(bytes, inodes) of the container's writable layer (walks it: call at stats pace)."""
        return await asyncio.to_thread(disk_usage, str(container_dir / "upper"))
