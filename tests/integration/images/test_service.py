"""ImageStatus, ListImages, RemoveImage and ImageFsInfo semantics, as critest and kubelet expect them."""

from __future__ import annotations

import concurrent.futures
import os

import pytest

from tests.integration.images.conftest import pull, running_daemon, spec, status
from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.images import USER_IMAGES, Catalog, Pusher, build_image, store_leftovers
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


def test_user_is_reported_as_uid_or_username(cri: Cri, catalog: Catalog) -> None:
    expected = {"user-uid": (1002, ""), "user-username": (None, "www-data"),
                "user-uid-group": (1003, ""), "user-username-group": (None, "www-data")}
    assert set(expected) == set(USER_IMAGES)
    for repo, (uid, username) in expected.items():
        image = status(cri, pull(cri, catalog.ref(repo))).image
        assert (image.uid.value if image.HasField("uid") else None, image.username) == (uid, username), repo


def test_three_tags_one_image_and_identical_status_by_every_reference(cri: Cri, catalog: Catalog) -> None:
    refs = {pull(cri, catalog.ref("tags", t)) for t in ("1", "2", "3")}
    assert refs == {catalog.tagged.id}
    images = cri.image.ListImages(api.ListImagesRequest()).images
    assert len(images) == 1
    assert sorted(images[0].repo_tags) == [catalog.ref("tags", t) for t in ("1", "2", "3")]
    digest_ref = f"{catalog.host}/tags@{catalog.tagged.digest}"
    assert list(images[0].repo_digests) == [digest_ref]
    answers = [status(cri, r).image for r in (catalog.tagged.id, catalog.tagged.id[7:19], catalog.tagged.id[:20],
                                              catalog.ref("tags", "2"), digest_ref)]
    assert all(a == images[0] for a in answers)


def test_three_images_list_with_one_tag_each_and_filter(cri: Cri, catalog: Catalog) -> None:
    for n in (1, 2, 3):
        pull(cri, catalog.ref(f"image-{n}"))
    images = cri.image.ListImages(api.ListImagesRequest()).images
    assert sorted(i.id for i in images) == sorted(i.id for i in catalog.different)
    assert all(len(i.repo_tags) == 1 and i.size > 0 for i in images)
    only = cri.image.ListImages(api.ListImagesRequest(filter=api.ImageFilter(image=spec(catalog.ref("image-2"))))).images
    assert [i.id for i in only] == [catalog.different[1].id]
    none = cri.image.ListImages(api.ListImagesRequest(filter=api.ImageFilter(image=spec(catalog.ref("image-9"))))).images
    assert list(none) == []


def test_absent_image_status_is_empty_not_an_error(cri: Cri, catalog: Catalog) -> None:
    for ref in ("busybox", "sha256:" + "0" * 64, catalog.ref("busybox")):
        answer = status(cri, ref)
        assert not answer.HasField("image")


def test_removing_by_one_tag_removes_every_name_and_unused_layers(cri: Cri, image_daemon: Daemon, catalog: Catalog) -> None:
    for t in ("1", "2", "3"):
        pull(cri, catalog.ref("tags", t))
    cri.image.RemoveImage(api.RemoveImageRequest(image=spec(catalog.ref("tags", "2"))))
    for ref in [catalog.ref("tags", t) for t in ("1", "2", "3")] + [catalog.tagged.id]:
        assert not status(cri, ref).HasField("image")
    assert cri.image.ListImages(api.ListImagesRequest()).images == []
    assert store_leftovers(image_daemon) == []
    # Removing what is not there succeeds, by ID or by name.
    cri.image.RemoveImage(api.RemoveImageRequest(image=spec("sha256:" + "0" * 64)))
    cri.image.RemoveImage(api.RemoveImageRequest(image=spec(catalog.ref("tags", "1"))))


def test_shared_layers_stay_while_another_image_uses_them(cri: Cri, catalog: Catalog) -> None:
    pull(cri, catalog.ref("image-1"))
    pull(cri, catalog.ref("image-2"))
    cri.image.RemoveImage(api.RemoveImageRequest(image=spec(catalog.different[0].id)))
    fs_before = cri.image.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems[0]
    assert fs_before.used_bytes.value > 0  # image-2 still holds the shared busybox layer
    assert status(cri, catalog.ref("image-2")).image.id == catalog.different[1].id


def test_five_concurrent_removals_by_id_all_succeed(cri: Cri, catalog: Catalog) -> None:
    image_id = pull(cri, catalog.ref("busybox"))

    def remove(_: int) -> bool:
        cri.image.RemoveImage(api.RemoveImageRequest(image=spec(image_id)))
        return status(cri, image_id).HasField("image")

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        assert list(pool.map(remove, range(5))) == [False] * 5


def test_image_fs_info_is_a_real_mountpoint_with_running_totals(cri: Cri, catalog: Catalog) -> None:
    empty = cri.image.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems[0]
    assert os.path.ismount(empty.fs_id.mountpoint) and empty.timestamp > 0
    pull(cri, catalog.ref("layered"))
    full = cri.image.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems[0]
    assert full.used_bytes.value > empty.used_bytes.value + 500_000  # busybox is over 1 MB unpacked
    assert full.inodes_used.value > empty.inodes_used.value + 10  # directories and files (applets are hardlinks: one inode)
    cri.image.RemoveImage(api.RemoveImageRequest(image=spec(catalog.ref("layered"))))
    again = cri.image.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems[0]
    assert (again.used_bytes.value, again.inodes_used.value) == (empty.used_bytes.value, empty.inodes_used.value)


def test_pinned_images_are_reported(registry: Registry, catalog: Catalog) -> None:
    with running_daemon({"insecure_registries": [registry.host], "pinned_images": [catalog.ref("image-1")]}) as (_, client):
        assert status(client, pull(client, catalog.ref("image-1"))).image.pinned
        assert not status(client, pull(client, catalog.ref("image-2"))).image.pinned


def test_a_tag_pulled_again_for_new_content_moves(registry: Registry, cri: Cri, catalog: Catalog) -> None:
    pusher = Pusher(registry.url)
    first = build_image(catalog.busybox.layers, {"Env": ["V=1"]})
    second = build_image(catalog.busybox.layers, {"Env": ["V=2"]})
    pusher.push(first, "moving", "latest")
    assert pull(cri, catalog.ref("moving")) == first.id
    pusher.push(second, "moving", "latest")
    assert pull(cri, catalog.ref("moving")) == second.id
    old = status(cri, first.id).image
    assert list(old.repo_tags) == [] and old.id == first.id  # kept, untagged, removable by ID
    assert list(status(cri, catalog.ref("moving")).image.repo_tags) == [catalog.ref("moving")]
