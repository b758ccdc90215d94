"""Images survive a daemon restart or crash; partial work and orphans a crash left are cleaned."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.images import Pusher, build_image, busybox_layers, store_leftovers
from tests.support.proxy import RegistryProxy
from tests.support.registry import Registry

pytestmark = pytest.mark.restart


@pytest.fixture
def setup(tmp_path) -> Iterator[tuple[Registry, Daemon, object]]:
    with Registry() as reg:
        image = build_image(busybox_layers(tmp_path, 3), {"User": "www-data", "Cmd": ["sh"]})
        Pusher(reg.url).push(image, "restart/busybox", "v1")
        d = Daemon({"images": {"insecure_registries": [reg.host]}})
        d.start()
        yield reg, d, image
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


def test_images_survive_a_crash_and_partial_work_is_removed(setup) -> None:
    reg, d, image = setup
    name = f"{reg.host}/restart/busybox:v1"
    client = Cri(d.endpoint)
    ref = client.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=name))).image_ref
    before = client.image.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=name))).image
    fs_before = client.image.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems[0]
    client.close()
    d.kill()
    # What a crash mid-pull leaves: a partial download, a half-applied layer, an orphan blob,
    # and (a power cut before the layers were synced) a layer whose layer.json came out empty.
    store = d.dir / "state" / "images"
    (store / "ingest" / "abcdef012345-999999999-0123456789ab").write_bytes(b"partial")
    (store / "layers" / ".tmp-999999999-0123456789ab" / "diff").mkdir(parents=True)
    (store / "layers" / ("f" * 64) / "diff").mkdir(parents=True)
    (store / "layers" / ("f" * 64) / "layer.json").write_bytes(b"")
    (store / "blobs" / "sha256" / ("e" * 64)).write_bytes(b"orphan")
    d.start()
    client = Cri(d.endpoint)
    after = client.image.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=ref))).image
    assert after == before and after.id == image.id and after.username == "www-data"
    fs_after = client.image.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems[0]
    assert (fs_after.used_bytes.value, fs_after.inodes_used.value) == (fs_before.used_bytes.value, fs_before.inodes_used.value)
    assert list((store / "ingest").iterdir()) == []
    assert not any(p.name.startswith(".") for p in (store / "layers").iterdir())
    assert not (store / "layers" / ("f" * 64)).exists()
    assert not (store / "blobs" / "sha256" / ("e" * 64)).exists()
    client.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=ref)))
    client.close()
    d.restart()
    client = Cri(d.endpoint)
    assert client.image.ListImages(api.ListImagesRequest()).images == []
    client.close()


def test_kill_9_during_a_pull_leaves_nothing_and_the_retry_pulls(tmp_path) -> None:
    """A real crash mid-download: the daemon dies while a layer is half received."""
    with Registry() as reg:
        image = build_image(busybox_layers(tmp_path, 3), {"Cmd": ["sh"]})
        Pusher(reg.url).push(image, "restart/pulled", "v1")
        proxy = RegistryProxy(reg.url).start()
        d = Daemon({"images": {"insecure_registries": [proxy.host]}})
        try:
            d.start()
            name = f"{proxy.host}/restart/pulled:v1"
            stalled = image.layers[0].digest
            proxy.stall.add(stalled)
            client = Cri(d.endpoint)
            call = client.image.PullImage.future(api.PullImageRequest(image=api.ImageSpec(image=name)))
            deadline = time.monotonic() + 30
            while not proxy.blob_gets[stalled] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proxy.blob_gets[stalled], "the pull never reached the stalled layer"
            d.kill()
            with pytest.raises(grpc.RpcError):
                call.result(timeout=30)
            client.close()
            proxy.stall.discard(stalled)
            d.start()
            client = Cri(d.endpoint)
            assert client.image.ListImages(api.ListImagesRequest()).images == []
            assert store_leftovers(d) == []
            ref = client.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=name))).image_ref
            assert ref == image.id
            client.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=ref)))
            assert store_leftovers(d) == []
            client.close()
        finally:
            d.stop()
            proxy.stop()
            shutil.rmtree(d.dir, ignore_errors=True)
