"""What kubelet and CRI clients expect as containerd answers: a host-network pod cannot name its
own hostname, ContainerStats has nothing for a container that is not running, and a
RunPodSandbox for a pod's metadata is a retry only when it asks for the same pod.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.pods import changes, pod_config, remove_pod, run_pod, snapshot, warm_up
from tests.support.registry import Registry
from tests.support.workloads import (
    FOREVER,
    Pulled,
    container_config,
    create,
    logged_pod,
    pulled_daemon,
    pulling_from,
    run_container,
    stop,
    wait_state,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def host_network(**fields: Any) -> api.PodSandboxConfig:
    ns = api.NamespaceOption(network=api.NODE)
    return pod_config("hostnet", linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(namespace_options=ns)), **fields)


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def pod_ids(cri: Cri) -> list[str]:
    return [p.id for p in cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items]


def test_host_network_pod_with_its_own_hostname_is_refused(cri: Cri, daemon: Daemon) -> None:
    warm_up(cri)
    before = snapshot(daemon)
    err = refused(lambda: run_pod(cri, host_network(hostname="not-the-node")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "UTS namespace" in err.details() and "not-the-node" in err.details()
    assert pod_ids(cri) == []
    assert changes(before, snapshot(daemon)) == {}
    # As kubelet sends a host-network pod: no hostname, the node's.
    remove_pod(cri, run_pod(cri, host_network()))
    assert changes(before, snapshot(daemon)) == {}
