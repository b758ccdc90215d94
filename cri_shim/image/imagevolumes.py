"""Image volumes (KEP-4639, kubelet's ImageVolume feature): CRI mounts that name an image, not a host path.

Each one is the image's layers as a read-only overlay of its own (lower layers only, MS_RDONLY) at
<container_dir>/images/<n> for the container's n-th mount, its layers leased like a rootfs's so that
RemoveImage keeps them; the container binds it, or the directory image_sub_path names in it,
read-only. The rules are containerd's: the image is in the store already (kubelet pulls it first;
NotFound before anything is made otherwise), the mount has no host path and is read-only, and the
sub path is a directory of the image. A sub path is relative and has no ".."; it is resolved with
its symlinks evaluated inside the image (cri_shim.oci.rootpath), so it never leaves it, and since
the overlay has no writable layer nothing can change what was resolved. All of it lives below the
container's directory: released with its rootfs on removal, after a failed create, and at start-up
for a directory no container record owns.
"""

from __future__ import annotations

from pathlib import Path

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument, NotFound
from cri_shim.idmappings import IdMappings
from cri_shim.image.records import ImageRecord
from cri_shim.image.rootfs import Rootfs
from cri_shim.image.store import ImageStore
from cri_shim.oci import rootpath


def _check_sub_path(m: api_pb2.Mount) -> None:
    sub = m.image_sub_path
    if sub.startswith("/") or ".." in sub.split("/") or "\x00" in sub:
        raise InvalidArgument(f"image volume at {m.container_path!r}: sub path {sub!r} must be relative, without '..'")


class ImageVolumes:
    """Mounts and releases the image volumes of containers."""

    def __init__(self, store: ImageStore, rootfs: Rootfs) -> None:
        self.store = store
        self.rootfs = rootfs

    def check(self, mounts: list[api_pb2.Mount]) -> dict[int, ImageRecord]:
        """The image of each image volume by its index among mounts; refuses what cannot be mounted
        (called before the container has anything)."""
        found = {}
        for n, m in enumerate(mounts):
            if not m.HasField("image"):
                continue
            if m.host_path:
                raise InvalidArgument(f"image volume at {m.container_path!r} must not have a host path")
            if not m.readonly:
                raise InvalidArgument(f"image volume at {m.container_path!r} must be read-only")
            if not m.image.image:
                raise InvalidArgument(f"image volume at {m.container_path!r} names no image")
            _check_sub_path(m)
            try:
                found[n] = self.store.resolve(m.image.image)
            except NotFound:
                raise NotFound(f"image volume at {m.container_path!r}: image {m.image.image!r} not found (pull it first)") from None
        return found

    async def mount(self, container_dir: Path, config: api_pb2.ContainerConfig, images: dict[int, ImageRecord],
                    userns: tuple[str, IdMappings] | None = None) -> api_pb2.ContainerConfig:
        """Mounts each checked image and returns config with those mounts' host paths filled in
        (what the spec binds, and what ContainerStatus shows, as containerd does); over idmapped
        layers in a pod with a user namespace (userns: its pin and mappings)."""
        if not images:
            return config
        out = api_pb2.ContainerConfig()
        out.CopyFrom(config)
        for n, record in images.items():
            m = out.mounts[n]
            target = container_dir / "images" / str(n)
            await self.rootfs.mount_image(record, target, userns)
            source = rootpath.resolve(target, m.image_sub_path)
            if not source.exists():
                raise NotFound(f"image volume at {m.container_path!r}: {m.image_sub_path!r} not found in image {m.image.image!r}")
            if not source.is_dir():
                raise InvalidArgument(f"image volume at {m.container_path!r}: {m.image_sub_path!r} is not a directory")
            m.host_path = str(source)
        return out

    async def release(self, container_dir: Path) -> None:
        """Unmounts and removes every image volume of the container; none is not an error."""
        base = container_dir / "images"
        if not base.is_dir():
            return
        for target in sorted(base.iterdir()):
            await self.rootfs.release_image(target)
        base.rmdir()
