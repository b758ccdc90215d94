"""critest "PodSandbox" sysctl specs (pkg/validate/pod_linux.go)."""

from __future__ import annotations

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import Framework

pytestmark = pytest.mark.conformance


def sysctl_seen(f: Framework, sysctls: dict[str, str], prefix: str, path: str) -> str:
    config = f.pod_config("pod-sandbox-with-sysctls-", linux=cri.LinuxPodSandboxConfig(sysctls=sysctls))
    pod_id = f.run_pod_sandbox(config)
    container_id = f.create_default_container(pod_id, config, prefix)
    f.start_container(container_id)
    return f.exec_sync(container_id, ["cat", path], timeout=30).stdout.decode().strip()


def test_should_support_safe_sysctls(f: Framework) -> None:
    assert sysctl_seen(f, {"kernel.shm_rmid_forced": "1"}, "container-shm-rmid-forced",
                       "/proc/sys/kernel/shm_rmid_forced") == "1"


def test_should_support_unsafe_sysctls(f: Framework) -> None:
    assert sysctl_seen(f, {"fs.mqueue.msg_max": "100"}, "container-fs-mqueue-msg-max", "/proc/sys/fs/mqueue/msg_max") == "100"
