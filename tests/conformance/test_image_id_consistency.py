"""critest "Image Identifier Consistency" specs (pkg/validate/image_id_consistency.go)."""

from __future__ import annotations

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import ATTEMPT, Framework, new_uuid
from tests.support.standin_images import IMAGE_WITH_TAG, SAME_IMAGE_REGISTRIES

pytestmark = pytest.mark.conformance


def run_by_id(f: Framework, image_ref: str, user_specified: str, prefix: str) -> str:
    """A container created from the image ID with no command, started; its id."""
    pod_id, pod_config = f.create_pod_sandbox_for_container()
    config = cri.ContainerConfig(metadata=cri.ContainerMetadata(name=prefix + new_uuid(), attempt=ATTEMPT),
                                 image=cri.ImageSpec(image=image_ref, user_specified_image=user_specified))
    container_id = f.rc.CreateContainer(cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                                                   sandbox_config=pod_config)).container_id
    f.start_container(container_id)
    return container_id


def test_should_return_the_same_image_identifier_across_all_apis(f: Framework) -> None:
    image_ref = f.pull_public_image(IMAGE_WITH_TAG)
    try:
        status = f.image_status(IMAGE_WITH_TAG)
        assert status is not None
        container_id = run_by_id(f, image_ref, IMAGE_WITH_TAG, "id-consistency-")
        container_status = f.container_status(container_id)
        containers = f.list_containers(cri.ContainerFilter(id=container_id))
        assert len(containers) == 1
        assert status.id == image_ref, "Image.id MUST match PullImageResponse.image_ref"
        if not container_status.image_id:
            pytest.skip("ContainerStatus.image_id is empty (critest skips too)")
        assert container_status.image_id == image_ref
        if not containers[0].image_id:
            pytest.skip("Container.image_id is empty (critest skips too)")
        assert containers[0].image_id == image_ref
        f.remove_container(container_id)
    finally:
        f.cleanup()
        f.remove_image(IMAGE_WITH_TAG)


def test_should_return_the_same_image_identifier_when_pulled_from_different_registries(f: Framework) -> None:
    first, second = SAME_IMAGE_REGISTRIES
    try:
        ref1 = f.pull_public_image(first)
        ref2 = f.pull_public_image(second)
        assert ref1 and ref1 == ref2, "Image IDs MUST be the same for the same image from two registries"
        assert f.image_status(first).id == ref1
        assert f.image_status(second).id == ref1
        container_id = run_by_id(f, ref2, second, "id-consistency-multi-registry-")
        image_id = f.container_status(container_id).image_id
        if not image_id:
            pytest.skip("ContainerStatus.image_id is empty (critest skips too)")
        assert image_id == ref1
        f.remove_container(container_id)
    finally:
        f.cleanup()
        f.remove_image(first)
        f.remove_image(second)
