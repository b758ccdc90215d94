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


def stats_of(cri: Cri, container_id: str) -> api.ContainerStats:
    return cri.runtime.ContainerStats(api.ContainerStatsRequest(container_id=container_id)).stats


def listed_stats(cri: Cri, **f: Any) -> set[str]:
    request = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(**f))
    return {s.attributes.id for s in cri.runtime.ListContainerStats(request).stats}


def test_container_stats_only_of_a_running_container(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "stats-states")
    sid = run_pod(cri, pod)
    created = create(cri, sid, pod, container_config("created", "true", image=pulled.image))
    running = run_container(cri, sid, pod, container_config("running", "sh", "-c", FOREVER, image=pulled.image))
    exited = run_container(cri, sid, pod, container_config("exited", "sh", "-c", FOREVER, image=pulled.image))
    stop(cri, exited)
    wait_state(cri, exited, api.CONTAINER_EXITED)

    assert stats_of(cri, running).memory.timestamp > 0
    for cid, state in ((created, "created"), (exited, "exited")):
        err = refused(lambda: stats_of(cri, cid))
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
        assert cid in err.details() and state in err.details()
    # ListContainerStats as before: the running ones, or what an id names.
    assert listed_stats(cri) == {running}
    assert listed_stats(cri, id=created) == {created} and listed_stats(cri, id=exited) == {exited}
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}
