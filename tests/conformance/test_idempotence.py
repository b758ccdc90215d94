"""critest "Idempotence" specs (pkg/validate/idempotence.go): repeated or stray stop/remove calls succeed."""

from __future__ import annotations

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import Framework, new_uuid

pytestmark = pytest.mark.conformance

FAKE_IMAGE_ID = "0" * 64


def test_stoppodsandbox_should_not_return_an_error_if_not_found(f: Framework) -> None:
    f.stop_pod(new_uuid())


def test_stoppodsandbox_should_not_return_an_error_if_already_stopped(f: Framework) -> None:
    pod_id = f.run_default_pod_sandbox("idempotence-pod-")
    for _ in range(2):
        f.stop_pod(pod_id)
        assert f.pod_status(pod_id).state == cri.SANDBOX_NOTREADY
    f.remove_pod(pod_id)


def test_removepodsandbox_should_not_return_an_error_if_not_found(f: Framework) -> None:
    f.remove_pod(new_uuid())


def test_stopcontainer_should_not_return_an_error_if_not_found(f: Framework) -> None:
    f.stop_container(new_uuid(), timeout=0)


def test_stopcontainer_should_not_return_an_error_if_already_stopped(f: Framework) -> None:
    pod_id, pod_config = f.create_pod_sandbox_for_container()
    container_id = f.create_pause_container(pod_id, pod_config, "idempotence-container-")
    f.start_and_wait(container_id)
    f.stop_container(container_id)
    assert f.container_status(container_id).state == cri.CONTAINER_EXITED
    f.remove_container(container_id)
    f.remove_container(container_id)
    f.stop_pod(pod_id)
    f.remove_pod(pod_id)


def test_removecontainer_should_not_return_an_error_if_not_found(f: Framework) -> None:
    f.remove_container(new_uuid())


def test_removeimage_should_not_return_an_error_if_not_found(f: Framework) -> None:
    for _ in range(2):
        f.ic.RemoveImage(cri.RemoveImageRequest(image=cri.ImageSpec(image=FAKE_IMAGE_ID)))
