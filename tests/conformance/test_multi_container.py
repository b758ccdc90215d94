"""critest "Multiple Containers [Conformance]" specs (pkg/validate/multi_container_linux.go)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import ATTEMPT, Framework, eventually, new_uuid
from tests.conformance.test_networking import main_page_status, pod_url
from tests.support.standin_images import BUSYBOX, HTTPD

pytestmark = pytest.mark.conformance

HTTPD_PORT = 80
DEFAULT_LOG = "hello World"


@pytest.fixture
def pod(f: Framework) -> tuple[str, str, str]:
    """critest's BeforeEach: a pod (log dir, container port 80) running httpd then busybox; (pod, httpd, busybox)."""
    config = f.add_log_dir(f.pod_config("PodSandbox-for-multi-container-test-",
                                        port_mappings=[cri.PortMapping(container_port=HTTPD_PORT)]))
    pod_id = f.run_pod_sandbox(config)
    ids = []
    for prefix, image, command in (("httpd", HTTPD, []), ("busybox", BUSYBOX, ["sh", "-c", f"echo {DEFAULT_LOG}; sleep 1000"])):
        name = prefix + new_uuid()
        spec = cri.ContainerConfig(metadata=cri.ContainerMetadata(name=name, attempt=ATTEMPT), image=cri.ImageSpec(image=image),
                                   command=command, log_path=name + ".log")
        if image == HTTPD:
            spec.linux.SetInParent()
        ids.append(f.create_container(spec, pod_id, config))
        f.start_and_wait(ids[-1])
    return pod_id, ids[0], ids[1]


def test_should_support_network(f: Framework, pod: tuple[str, str, str]) -> None:
    assert main_page_status(pod_url(f, pod[0], HTTPD_PORT)) == 200


def test_should_support_container_log(f: Framework, pod: tuple[str, str, str]) -> None:
    for container_id, expected in ((pod[1], "httpd"), (pod[2], DEFAULT_LOG)):
        log_path = Path(f.container_status(container_id).log_path)
        assert log_path.is_absolute()
        eventually(lambda: log_path.read_text() if log_path.exists() else "", lambda text: expected in text,
                   what=f"{expected!r} in {log_path}")


def test_should_support_container_exec(f: Framework, pod: tuple[str, str, str]) -> None:
    assert f.exec_ok(pod[1], ["echo", "httpd"]) == b"httpd\n"
    assert f.exec_ok(pod[2], ["echo", "busybox"]) == b"busybox\n"
