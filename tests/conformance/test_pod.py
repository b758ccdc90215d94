"""critest "PodSandbox" specs (pkg/validate/pod.go)."""

from __future__ import annotations

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import ATTEMPT, NAMESPACE_PREFIX, UID_PREFIX, Framework, new_uuid

pytestmark = pytest.mark.conformance


def pod_listed(f: Framework, pod_id: str) -> bool:
    return any(p.id == pod_id for p in f.list_pods(cri.PodSandboxFilter(id=pod_id)))


def test_runtime_should_support_running_podsandbox(f: Framework) -> None:
    pod_id = f.run_default_pod_sandbox("PodSandbox-for-create-test-")
    assert f.pod_status(pod_id).state == cri.SANDBOX_READY
    assert pod_listed(f, pod_id), "PodSandbox should be listed"


def test_runtime_should_support_stopping_podsandbox(f: Framework) -> None:
    pod_id = f.run_default_pod_sandbox("PodSandbox-for-test-stop-")
    f.stop_pod(pod_id)
    assert f.pod_status(pod_id).state == cri.SANDBOX_NOTREADY


def test_runtime_should_support_removing_podsandbox(f: Framework) -> None:
    pod_id = f.run_default_pod_sandbox("PodSandbox-for-test-remove-")
    f.stop_pod(pod_id)
    f.remove_pod(pod_id)
    assert not pod_listed(f, pod_id), "PodSandbox should be removed"


def test_runtime_should_support_preserving_podsandbox_attributes(f: Framework) -> None:
    name = "PodSandbox-with-attributes-" + new_uuid()
    uid, namespace = UID_PREFIX + new_uuid(), NAMESPACE_PREFIX + new_uuid()
    metadata = cri.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=ATTEMPT)
    labels = {"foo": "bar", "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
              "io.kubernetes.pod.uid": uid}
    annotations = {"abc": "def"}
    config = cri.PodSandboxConfig(metadata=metadata, labels=labels, annotations=annotations, linux=cri.LinuxPodSandboxConfig())
    pod_id = f.run_pod_sandbox(config)

    status = f.pod_status(pod_id)
    pods = f.list_pods(cri.PodSandboxFilter(id=pod_id))
    assert len(pods) == 1
    for seen in (status, pods[0]):
        assert seen.metadata == metadata
        assert labels.items() <= dict(seen.labels).items()
        assert annotations.items() <= dict(seen.annotations).items()
