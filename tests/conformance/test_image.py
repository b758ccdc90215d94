"""critest "Image Manager" specs (pkg/validate/image.go).

critest pins test-image-digest by the digest of its upstream build; ours is a stand-in, so the
digest reference is the one of our build (tests/support/standin_images.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import Framework
from tests.support.standin_images import (
    DIFFERENT_IMAGES,
    IMAGE_WITH_ALL_REFERENCES,
    IMAGE_WITH_TAG,
    IMAGE_WITHOUT_TAG,
    SAME_IMAGE_REGISTRIES,
    SAME_IMAGE_TAGS,
    USER_IMAGES,
)

pytestmark = pytest.mark.conformance


def remove_and_check_gone(f: Framework, name: str) -> None:
    """critest's testRemoveImage: remove by ID, then the name no longer resolves."""
    status = f.image_status(name)
    if status is not None:
        f.ic.RemoveImage(cri.RemoveImageRequest(image=cri.ImageSpec(image=status.id)))
    assert f.image_status(name) is None, "Should have none image in list"


def pull_check_remove(f: Framework, name: str, check: Callable[[cri.Image], None]) -> None:
    """critest's testPullPublicImage."""
    f.remove_image(name)
    f.pull_public_image(name)
    status = f.image_status(name)
    assert status is not None, "Should have one image in list"
    assert status.id and status.size
    check(status)
    remove_and_check_gone(f, name)


def test_public_image_with_tag_should_be_pulled_and_removed(f: Framework) -> None:
    pull_check_remove(f, IMAGE_WITH_TAG, lambda s: _equal(list(s.repo_tags), [IMAGE_WITH_TAG]))


def test_public_image_should_timeout_if_requested(f: Framework) -> None:
    f.remove_image(IMAGE_WITH_TAG)
    with pytest.raises(grpc.RpcError) as err:
        f.ic.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=IMAGE_WITH_TAG)), timeout=0.001)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server must tolerate the cancelled call and go on answering.
    f.image_status(IMAGE_WITH_TAG)


def test_public_image_without_tag_should_be_pulled_and_removed(f: Framework) -> None:
    pull_check_remove(f, IMAGE_WITHOUT_TAG, lambda s: _equal(list(s.repo_tags), [IMAGE_WITHOUT_TAG + ":latest"]))


def test_public_image_with_digest_should_be_pulled_and_removed(f: Framework) -> None:
    ref = f.images.digest_ref

    def check(s: cri.Image) -> None:
        assert list(s.repo_tags) == []
        assert list(s.repo_digests) == [ref]

    pull_check_remove(f, ref, check)


def test_image_status_should_support_all_kinds_of_references(f: Framework) -> None:
    f.remove_image(IMAGE_WITH_ALL_REFERENCES)
    f.pull_public_image(IMAGE_WITH_ALL_REFERENCES)
    status = f.image_status(IMAGE_WITH_ALL_REFERENCES)
    assert status is not None, "should get image status"
    assert f.image_status(status.id) == status
    for ref in [*status.repo_tags, *status.repo_digests]:
        assert f.image_status(ref) == status, f"image status with {ref}"
    remove_and_check_gone(f, IMAGE_WITH_ALL_REFERENCES)


def test_image_status_get_image_fields_should_not_have_uid_username_empty(f: Framework) -> None:
    with fresh_pulls(f, list(USER_IMAGES)):
        for name, (_, uid, username) in USER_IMAGES.items():
            status = f.image_status(name)
            assert status is not None
            assert status.uid.value == uid, f"{name}: Image Uid should be {uid}"
            assert status.username == username, f"{name}: Image Username should be {username!r}"


def test_listimage_should_get_exactly_3_image_in_the_result_list(f: Framework) -> None:
    with fresh_pulls(f, DIFFERENT_IMAGES) as ids:
        assert len(set(ids)) == 3, "3 image ids should be returned"
        images = {i.id: i for i in f.list_images()}
        for image_id, name in zip(ids, DIFFERENT_IMAGES):
            assert list(images[image_id].repo_tags) == [name], "Should only have 1 repo tag"


def test_listimage_should_get_exactly_3_repotags_in_the_result_image(f: Framework) -> None:
    with fresh_pulls(f, SAME_IMAGE_TAGS) as ids:
        assert len(set(ids)) == 1, "Only 1 image id should be returned"
        image = next(i for i in f.list_images() if i.id == ids[0])
        assert sorted(image.repo_tags) == sorted(SAME_IMAGE_TAGS), "Should have 3 repoTags in single image"


@contextlib.contextmanager
def fresh_pulls(f: Framework, names: list[str]) -> Iterator[list[str]]:
    """critest's removeImageList + pullImageList, and the deferred removal: the pulled image refs."""
    for name in names:
        f.remove_image(name)
    try:
        yield [f.pull_public_image(name) for name in names]
    finally:
        for name in names:
            f.remove_image(name)


def removing_one_name_removes_all(f: Framework, names: list[str]) -> None:
    for name in names:
        f.remove_image(name)
    for name in names:
        f.pull_public_image(name)
    found = next((i for i in f.list_images() if names[0] in i.repo_tags), None)
    assert found is not None, "Should find the pulled image"
    assert len(found.repo_tags) == len(names) and set(names) <= set(found.repo_tags)
    f.remove_image(names[0])
    for ref in [*names, found.id]:
        assert f.image_status(ref) is None, f"Image should be gone when checking by {ref}"


def test_removing_image_by_one_tag_should_remove_all_tags(f: Framework) -> None:
    removing_one_name_removes_all(f, SAME_IMAGE_TAGS)


def test_removing_image_from_one_registry_should_remove_all_tags_from_other_registries(f: Framework) -> None:
    removing_one_name_removes_all(f, SAME_IMAGE_REGISTRIES)


def _equal(got: object, want: object) -> None:
    assert got == want
