"""Images survive a daemon restart or crash; partial work and orphans a crash left are cleaned."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.images import Pusher, build_image, busybox_layers
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
    # What a crash mid-pull leaves: a partial download, a half-applied layer, an orphan blob.
    store = d.dir / "state" / "images"
    (store / "ingest" / "abcdef012345-999999999-0123456789ab").write_bytes(b"partial")
    (store / "layers" / ".tmp-999999999-0123456789ab" / "diff").mkdir(parents=True)
    (store / "blobs" / "sha256" / ("e" * 64)).write_bytes(b"orphan")
    d.start()
    client = Cri(d.endpoint)
    after = client.image.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=ref))).image
    assert after == before and after.id == image.id and after.username == "www-data"
    fs_after = client.image.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems[0]
    assert (fs_after.used_bytes.value, fs_after.inodes_used.value) == (fs_before.used_bytes.value, fs_before.inodes_used.value)
    assert list((store / "ingest").iterdir()) == []
    assert not any(p.name.startswith(".") for p in (store / "layers").iterdir())
    assert not (store / "blobs" / "sha256" / ("e" * 64)).exists()
    client.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=ref)))
    client.close()
    d.restart()
    client = Cri(d.endpoint)
    assert client.image.ListImages(api.ListImagesRequest()).images == []
    client.close()
