"""What kubelet and CRI clients expect as containerd answers: a host-network pod cannot name its
own hostname, ContainerStats has nothing for a container that is not running, and a
RunPodSandbox for a pod's metadata is a retry only when it asks for the same pod.
"""

from __future__ import annotations

import os
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
    exec_sync,
    logged_pod,
    pulled_daemon,
    pulling_from,
    run_container,
    stop,
    verbose_info,
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


def test_run_with_a_ready_pods_metadata_is_a_retry_only_with_the_same_config(cri: Cri, daemon: Daemon) -> None:
    warm_up(cri)
    before = snapshot(daemon)
    config = pod_config("retried", labels={"app": "one"}, annotations={"a": "1"})
    sid = run_pod(cri, config)
    again = api.PodSandboxConfig()
    again.CopyFrom(config)  # the same message built again: the same bytes
    assert run_pod(cri, again) == sid

    other = api.PodSandboxConfig()
    other.CopyFrom(config)
    other.labels["app"] = "two"
    err = refused(lambda: run_pod(cri, other))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
    assert sid in err.details()
    assert pod_ids(cri) == [sid]
    status = cri.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid)).status
    assert dict(status.labels) == {"app": "one"}
    remove_pod(cri, sid)
    assert changes(before, snapshot(daemon)) == {}


def test_concurrent_runs_of_one_pod_with_two_configs_make_one_pod(cri: Cri, daemon: Daemon) -> None:
    warm_up(cri)
    before = snapshot(daemon)
    configs = [pod_config("raced", labels={"version": str(n)}) for n in (1, 2)]

    def attempt(config: api.PodSandboxConfig) -> str | grpc.RpcError:
        try:
            return run_pod(cri, config)
        except grpc.RpcError as err:
            return err

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(attempt, configs))
    made = [o for o in outcomes if isinstance(o, str)]
    errors = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    assert len(made) == 1 and len(errors) == 1, outcomes
    assert errors[0].code() == grpc.StatusCode.ALREADY_EXISTS and made[0] in errors[0].details()
    assert pod_ids(cri) == made
    remove_pod(cri, made[0])
    assert changes(before, snapshot(daemon)) == {}


def test_a_container_without_namespace_options_in_a_pod_of_pid_container_gets_its_own(pulled: Pulled) -> None:
    """crictl users' usual files: the pod asks for pid CONTAINER, the container names no namespace
    options (pid POD by proto3's zero). containerd runs it; so do we, in a PID namespace of its own."""
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "crictlpid")
    pod.linux.security_context.namespace_options.pid = api.CONTAINER
    sid = run_pod(cri, pod)
    first = container_config("first", "sleep", "600", image=pulled.name)
    second = container_config("second", "sleep", "601", image=pulled.name)
    assert not first.linux.HasField("security_context")
    ids = [run_container(cri, sid, pod, c) for c in (first, second)]
    for cid, seconds in zip(ids, ("600", "601")):
        assert exec_sync(cri, cid, "cat", "/proc/1/cmdline").stdout == f"sleep\x00{seconds}\x00".encode()
        ps = exec_sync(cri, cid, "ps", "-o", "pid,args").stdout.decode().splitlines()
        assert [line.split(None, 1) for line in ps[1:]] == [["1", f"sleep {seconds}"], [ps[2].split()[0], "ps -o pid,args"]]
    pid_ns = {os.readlink(f"/proc/{verbose_info(cri, cid)['pid']}/ns/pid") for cid in ids}
    assert len(pid_ns) == 2 and os.readlink("/proc/self/ns/pid") not in pid_ns

    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
