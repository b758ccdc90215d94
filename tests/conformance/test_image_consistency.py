"""critest "Image Consistency" specs (pkg/validate/image_consistency.go): pulls and removals are synchronous."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import Framework
from tests.support.standin_images import IMAGE_WITH_TAG

pytestmark = pytest.mark.conformance


def listed(f: Framework, name: str) -> bool:
    return any(name in i.repo_tags for i in f.list_images())


def test_should_not_list_or_get_image_status_immediately_after_removal(f: Framework) -> None:
    f.remove_image(IMAGE_WITH_TAG)
    f.pull_public_image(IMAGE_WITH_TAG)
    f.remove_image(IMAGE_WITH_TAG)
    assert not listed(f, IMAGE_WITH_TAG), "Image should not be listed after removal"
    assert f.image_status(IMAGE_WITH_TAG) is None


def test_should_list_and_get_image_status_immediately_after_pulling(f: Framework) -> None:
    f.remove_image(IMAGE_WITH_TAG)
    f.pull_public_image(IMAGE_WITH_TAG)
    try:
        assert listed(f, IMAGE_WITH_TAG), "Image should be listed after pulling"
        assert f.image_status(IMAGE_WITH_TAG) is not None
    finally:
        f.remove_image(IMAGE_WITH_TAG)


def test_should_not_fail_on_simultaneous_removeimage_calls(f: Framework) -> None:
    f.remove_image(IMAGE_WITH_TAG)
    f.pull_public_image(IMAGE_WITH_TAG)
    image = f.image_status(IMAGE_WITH_TAG)
    assert image is not None

    def remove() -> bool:
        f.ic.RemoveImage(cri.RemoveImageRequest(image=cri.ImageSpec(image=image.id)))
        return f.image_status(image.id) is not None

    with ThreadPoolExecutor(5) as pool:
        still_found = list(pool.map(lambda _: remove(), range(5)))
    assert still_found == [False] * 5, "Image should be missing immediately after RemoveImage call returns"
    assert f.image_status(image.id) is None
