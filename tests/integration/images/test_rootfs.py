"""Overlay root filesystems for containers: mount, writable layer, leases, many layers, cleanup."""

from __future__ import annotations

import asyncio
import tarfile
from pathlib import Path

import pytest

from cri_shim.config import ImagesConfig
from cri_shim.errors import NotFound
from cri_shim.image.importer import import_archive
from cri_shim.image.pull import Puller
from cri_shim.image.reference import parse
from cri_shim.image.auth import ANONYMOUS
from cri_shim.image.rootfs import Rootfs
from cri_shim.image.store import ImageStore
from tests.integration.images.test_unpack import entry
from tests.support.images import Catalog, build_image, oci_archive, tar_layer
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


def mounted_below(path: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(path))]


def new_store(tmp_path: Path) -> ImageStore:
    store = ImageStore(tmp_path / "images")
    store.open()
    return store


def test_prepare_write_and_release_leave_no_mount(tmp_path: Path, registry: Registry, catalog: Catalog) -> None:
    async def scenario() -> None:
        store = new_store(tmp_path)
        record = await Puller(store, ImagesConfig(insecure_registries=[registry.host]), {}).pull(parse(catalog.ref("layered")), ANONYMOUS)
        rootfs = Rootfs(store)
        container = tmp_path / "containers" / "c1"
        path = await rootfs.prepare(record.image_id, container)
        assert path == container / "rootfs" and rootfs.mounted(container)
        assert (path / "bin/busybox").is_file() and "www-data" in (path / "etc/passwd").read_text()
        assert await rootfs.prepare(catalog.ref("layered"), container) == path  # idempotent
        (path / "root/new-file").write_bytes(b"x" * 10000)
        used, inodes = await rootfs.writable_usage(container)
        assert used >= 10000 and inodes >= 2  # root/ copied up, and the file
        assert (container / "upper/root/new-file").exists()
        # RemoveImage is allowed while the container runs: its layers stay until release.
        await store.remove(record.image_id)
        assert (path / "bin/busybox").is_file()
        await rootfs.release(container)
        await rootfs.release(container)  # idempotent
        assert mounted_below(tmp_path) == []
        assert not (container / "upper").exists() and not (container / "rootfs").exists()
        assert list(store.layers.root.iterdir()) == []  # the removed image's layers went with the lease

    asyncio.run(scenario())


def test_releasing_a_rootfs_whose_image_is_kept_keeps_its_layers_and_leaves_the_store_as_it_was(
        tmp_path: Path, registry: Registry, catalog: Catalog) -> None:
    """The common removal: the layers belong to the image still, so nothing is collected, and the
    store's generation (which other processes reload on) is not written."""
    async def scenario() -> None:
        store = new_store(tmp_path)
        record = await Puller(store, ImagesConfig(insecure_registries=[registry.host]), {}).pull(parse(catalog.ref("layered")), ANONYMOUS)
        rootfs = Rootfs(store)
        layers = sorted(store.layers.root.iterdir())
        container = tmp_path / "containers" / "c1"
        await rootfs.prepare(record.image_id, container)
        generation = (store.root / "generation").stat()
        await rootfs.release(container)
        after = (store.root / "generation").stat()
        assert (after.st_ino, after.st_mtime_ns) == (generation.st_ino, generation.st_mtime_ns)
        assert sorted(store.layers.root.iterdir()) == layers and store.leases == {}
        assert await rootfs.prepare(record.image_id, container) == container / "rootfs"
        await rootfs.release(container)
        assert mounted_below(tmp_path) == []

    asyncio.run(scenario())


def test_unmount_at_exit_keeps_the_writable_layer_and_drops_the_lease(tmp_path: Path) -> None:
    """An exited container's root: unmount() leaves the writable layer for release() and gives
    up the layers' lease, so an image removed meanwhile goes at once; the store's generation
    (a durable write other processes watch) moves only when something was taken out."""
    image = build_image([tar_layer([(entry("etc", tarfile.DIRTYPE), None), (entry("etc/base"), b"b")])])

    async def scenario() -> None:
        store = new_store(tmp_path)
        await import_archive(store, oci_archive(tmp_path / "img.tar", image, "example.com/exit:1"))
        rootfs = Rootfs(store)
        kept, removed = tmp_path / "c1", tmp_path / "c2"
        for container in (kept, removed):
            (await rootfs.prepare(image.id, container) / "written").write_text(container.name)
        generation = (store.root / "generation").read_bytes()
        await rootfs.unmount(kept)
        await rootfs.unmount(kept)  # idempotent
        assert not rootfs.mounted(kept) and (kept / "upper" / "written").read_text() == "c1"
        assert (store.root / "generation").read_bytes() == generation, "the other lease keeps the layers"
        await store.remove(image.id)
        assert list(store.layers.root.iterdir()) != [], "the mounted root's lease keeps its layers"
        await rootfs.unmount(removed)
        assert list(store.layers.root.iterdir()) == [], "the last lease gone, the removed image's layers go"
        assert (removed / "upper" / "written").read_text() == "c2"
        for container in (kept, removed):
            await rootfs.release(container)
            assert not (container / "upper").exists() and not (container / "rootfs").exists()
        assert mounted_below(tmp_path) == []

    asyncio.run(scenario())


def test_whiteouts_of_upper_layers_hide_lower_files(tmp_path: Path) -> None:
    base = tar_layer([(entry("etc", tarfile.DIRTYPE), None), (entry("etc/old"), b"old"), (entry("etc/keep"), b"keep"),
                      (entry("opaque", tarfile.DIRTYPE), None), (entry("opaque/hidden"), b"h")])
    top = tar_layer([(entry("etc/.wh.old"), b""), (entry("opaque", tarfile.DIRTYPE), None),
                     (entry("opaque/.wh..wh..opq"), b""), (entry("opaque/new"), b"n")])
    image = build_image([base, top])

    async def scenario() -> None:
        store = new_store(tmp_path)
        [record] = await import_archive(store, oci_archive(tmp_path / "img.tar", image, "example.com/wh:1"))
        rootfs = Rootfs(store)
        path = await rootfs.prepare("example.com/wh:1", tmp_path / "c")
        try:
            assert sorted(p.name for p in (path / "etc").iterdir()) == ["keep"]
            assert sorted(p.name for p in (path / "opaque").iterdir()) == ["new"]
        finally:
            await rootfs.release(tmp_path / "c")
        assert record.image_id == image.id

    asyncio.run(scenario())


def test_many_layers_exceeding_one_page_of_options_mount(tmp_path: Path) -> None:
    layers = [tar_layer([(entry(f"layer-{n:03d}"), str(n).encode())], "none") for n in range(60)]
    image = build_image(layers)
    deep = tmp_path / ("long-directory-name-" * 4)

    async def scenario() -> None:
        store = ImageStore(deep / "images")
        store.open()
        await import_archive(store, oci_archive(tmp_path / "img.tar", image, "example.com/many:1"))
        rootfs = Rootfs(store)
        path = await rootfs.prepare(image.id, tmp_path / "c")
        try:
            assert len(list(path.glob("layer-*"))) == 60 and (path / "layer-059").read_text() == "59"
        finally:
            await rootfs.release(tmp_path / "c")
        assert mounted_below(tmp_path) == []

    asyncio.run(scenario())


def test_prepare_of_an_unknown_image_is_not_found(tmp_path: Path) -> None:
    async def scenario() -> None:
        rootfs = Rootfs(new_store(tmp_path))
        with pytest.raises(NotFound):
            await rootfs.prepare("sha256:" + "0" * 64, tmp_path / "c")
        assert mounted_below(tmp_path) == []

    asyncio.run(scenario())
