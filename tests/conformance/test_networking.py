"""critest "Networking" specs (pkg/validate/networking.go): DNS config, hostname, port mappings."""

from __future__ import annotations

import urllib.request

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import ATTEMPT, Framework, eventually, new_uuid
from tests.support.standin_images import NGINX

pytestmark = pytest.mark.conformance

WEB_PORT = 80
HOST_PORT_FOR_PORT_MAPPING = 12000


def web_server(f: Framework, pod_id: str, config: cri.PodSandboxConfig, prefix: str, image: str = NGINX) -> str:
    """critest's createWebServerContainer: the image's own command, started."""
    spec = cri.ContainerConfig(metadata=cri.ContainerMetadata(name=prefix + new_uuid(), attempt=ATTEMPT),
                               image=cri.ImageSpec(image=image), linux=cri.LinuxContainerConfig())
    container_id = f.create_container(spec, pod_id, config)
    f.start_container(container_id)
    return container_id


def main_page_status(url: str) -> int:
    """critest's checkMainPage: GET until it answers (within a minute); the HTTP status."""
    def get() -> int | None:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status
        except OSError:
            return None

    return eventually(get, lambda s: s is not None, what=f"GET {url}")


def pod_url(f: Framework, pod_id: str, port: int) -> str:
    status = f.pod_status(pod_id)
    assert status.network.ip, "The IP should not be empty."
    return f"http://{status.network.ip}:{port}/"


def test_runtime_should_support_dns_config(f: Framework) -> None:
    dns = cri.DNSConfig(servers=["10.10.10.10"], searches=["google.com"], options=["ndots:8"])
    config = f.pod_config("create-PodSandbox-with-DNS-config", dns_config=dns)
    pod_id = f.run_pod_sandbox(config)
    container_id = f.create_default_container(pod_id, config, "container-for-DNS-config-test-")
    f.start_container(container_id)
    resolv = f.exec_ok(container_id, ["cat", "/etc/resolv.conf"]).decode()
    for line in ("nameserver 10.10.10.10", "search google.com", "options ndots:8"):
        assert line in resolv, resolv


def test_runtime_should_support_set_hostname(f: Framework) -> None:
    config = f.pod_config("create-PodSandbox-with-hostname", hostname="test-hostname")
    pod_id = f.run_pod_sandbox(config)
    container_id = f.create_default_container(pod_id, config, "container-for-hostname-test-")
    f.start_container(container_id)
    assert f.exec_ok(container_id, ["hostname"]).decode().strip().lower() == "test-hostname"


def test_runtime_should_support_port_mapping_with_only_container_port(f: Framework) -> None:
    config = f.pod_config("create-PodSandbox-with-port-mapping", port_mappings=[cri.PortMapping(container_port=WEB_PORT)])
    pod_id = f.run_pod_sandbox(config)
    web_server(f, pod_id, config, "container-for-container-port")
    assert main_page_status(pod_url(f, pod_id, WEB_PORT)) == 200


def test_runtime_should_support_port_mapping_with_host_port_and_container_port(f: Framework) -> None:
    mapping = cri.PortMapping(container_port=WEB_PORT, host_port=HOST_PORT_FOR_PORT_MAPPING)
    config = f.pod_config("create-PodSandbox-with-port-mapping", port_mappings=[mapping])
    pod_id = f.run_pod_sandbox(config)
    web_server(f, pod_id, config, "container-for-host-port")
    assert main_page_status(f"http://127.0.0.1:{HOST_PORT_FOR_PORT_MAPPING}/") == 200
