"""Bounded metadata on a real daemon: oversized or injecting pod and container metadata refused with
nothing left behind, and the List budget that keeps every List response under the message limit.

The daemon's message limit is 4 MiB here (kubelet's is 16), so that its List budgets (3/8 of it
for pods, as much for containers: 1.5 MiB) are reached with six objects carrying 256 KiB each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.support.client import api
from tests.support.pods import changes, pod_config, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled,
    container_config,
    create,
    listed,
    logged_pod,
    pulled_daemon,
    pulling_from,
    run_container,
)

pytestmark = pytest.mark.integration

__all__ = ["pulled_daemon"]  # the pulled fixture

LIMIT = 4 * 1024 * 1024
KIB = 1024
BIG = 128 * KIB
INJECTED_IP = "10.99.77.77"
# Host-network pods (quick to make) and containers sharing their namespaces, as kubelet has them.
HOST_NAMESPACES = api.NamespaceOption(network=api.NODE, pid=api.CONTAINER, ipc=api.NODE)
HOST_NETWORK = api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=HOST_NAMESPACES))
IN_HOST_POD = api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(namespace_options=HOST_NAMESPACES))
# One annotation of 256 KiB less its key: the largest a pod or container may carry.
AT_CAP = {"a": "b" * (256 * KIB - 1)}


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    overrides = pulling_from(registry)
    overrides["server"] = {"max_message_bytes": LIMIT}
    return overrides


def refused(call: Callable[[], object], code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
    """The details of the status call fails with, which must be code and short (no echo)."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    assert len(err.value.details()) < 400, err.value.details()[:400]
    return err.value.details()


def ctr(name: str, pulled: Pulled, **fields: Any) -> api.ContainerConfig:
    """A container of busybox sleeping in a host-network pod."""
    return container_config(name, "sleep", "600", image=pulled.image, linux=IN_HOST_POD, **fields)


def _meta(name: str = "bounded", namespace: str = "test-ns", uid: str = "uid-bounded") -> api.PodSandboxMetadata:
    return api.PodSandboxMetadata(name=name, namespace=namespace, uid=uid)


POD_ROWS = [
    ("name of 128 KiB", api.PodSandboxConfig(metadata=_meta(name="n" * BIG)), "name is 131072 bytes"),
    ("uid of 128 KiB", api.PodSandboxConfig(metadata=_meta(uid="u" * BIG)), "uid is 131072 bytes"),
    ("namespace of 64", api.PodSandboxConfig(metadata=_meta(namespace="s" * 64)), "over the 63-byte limit"),
    ("label value of 128 KiB", pod_config("bounded", labels={"k": "v" * BIG}), "value of 131072 bytes"),
    ("label key of 318", pod_config("bounded", labels={"k" * 318: "v"}), "labels: key"),
    ("annotations past 256 KiB", pod_config("bounded", annotations={"a": "b" * (256 * KIB)}), "annotations total"),
    ("CNI_ARGS injection in the name", api.PodSandboxConfig(metadata=_meta(name=f"inj;IP={INJECTED_IP}")), "must not contain ';' '='"),
    ("CNI_ARGS injection in the uid", api.PodSandboxConfig(metadata=_meta(uid=f"u;IP={INJECTED_IP}")), "must not contain ';' '='"),
    ("CNI_ARGS injection in the namespace", api.PodSandboxConfig(metadata=_meta(namespace="a=b")), "must not contain '='"),
]


def test_oversized_or_injecting_pod_metadata_is_refused_and_leaves_nothing(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    for label, config, message in POD_ROWS:
        details = refused(lambda: run_pod(cri, config))
        assert message in details, (label, details)
        assert changes(pulled.before, snapshot(d)) == {}, (label, d.log_tail())
    assert cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    # A pod at every bound is made, and its address is the network's, not one it chose.
    config = api.PodSandboxConfig(metadata=_meta(name="n" * 253, namespace="s" * 63, uid="u" * 128),
                                  labels={"io.kubernetes.pod.name": "n" * 253}, annotations=AT_CAP)
    sid = run_pod(cri, config)
    ip = cri.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid)).status.network.ip
    assert ip and ip != INJECTED_IP
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}, d.log_tail()


def test_containers_near_the_caps_list_and_one_past_them_is_refused(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "annotated", linux=HOST_NETWORK)
    sid = run_pod(cri, pod)
    labels = {f"label{i:03}": "v" * 253 for i in range(900)}  # 900 labels of the largest value: 233 KiB
    ids = [run_container(cri, sid, pod, ctr(f"c{i}", pulled, labels=labels, annotations=AT_CAP)) for i in range(2)]
    items = listed(cri)
    assert sorted(c.id for c in items) == sorted(ids)
    assert all(dict(c.annotations) == AT_CAP and dict(c.labels) == labels for c in items)
    stats = cri.runtime.ListContainerStats(api.ListContainerStatsRequest()).stats
    assert sorted(s.attributes.id for s in stats) == sorted(ids)
    before = snapshot(d)
    for label, fields, message in [
        ("annotations past the cap", {"annotations": {"a": "b" * (256 * KIB)}}, "container annotations total 262145 bytes"),
        ("labels past the cap", {"labels": {**labels, **{f"more{i:03}": "v" * 253 for i in range(120)}}}, "container labels total"),
        ("label value past its bound", {"labels": {"k": "v" * 254}}, "value of 254 bytes"),
        ("name of 128 KiB", {"metadata": api.ContainerMetadata(name="n" * BIG)}, "container name is 131072 bytes"),
    ]:
        config = ctr("c-over", pulled)
        for field, value in fields.items():
            if field == "metadata":
                config.metadata.CopyFrom(value)
            else:
                getattr(config, field).update(value)
        details = refused(lambda: create(cri, sid, pod, config))
        assert message in details, (label, details)
        assert changes(before, snapshot(d)) == {}, (label, d.log_tail())
    assert len(listed(cri)) == 2
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}, d.log_tail()


def test_pods_past_the_list_budget_are_refused_and_the_list_still_answers(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    # Each entry counts 2 KiB besides its 256 KiB: five fit in the 1.5 MiB budget, a sixth does not.
    pods = [run_pod(cri, pod_config(f"full{i}", linux=HOST_NETWORK, annotations=AT_CAP)) for i in range(5)]
    before = snapshot(d)
    details = refused(lambda: run_pod(cri, pod_config("one-more", linux=HOST_NETWORK, annotations=AT_CAP)),
                      grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "budget that keeps List responses under the gRPC message limit" in details
    assert changes(before, snapshot(d)) == {}, d.log_tail()
    answer = cri.runtime.ListPodSandbox(api.ListPodSandboxRequest())
    assert sorted(p.id for p in answer.items) == sorted(pods) and answer.ByteSize() < LIMIT
    small = run_pod(cri, pod_config("small", linux=HOST_NETWORK))  # the budget is a size, not a count
    remove_pod(cri, pods.pop())
    pods.append(run_pod(cri, pod_config("one-more", linux=HOST_NETWORK, annotations=AT_CAP)))  # room again
    stats = cri.runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest()).stats
    assert len(stats) == 6
    for sid in [*pods, small]:
        remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}, d.log_tail()


def test_containers_past_the_list_budget_are_refused_and_the_list_still_answers(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "budget", linux=HOST_NETWORK)
    sid = run_pod(cri, pod)
    ids = [run_container(cri, sid, pod, ctr(f"c{i}", pulled, annotations=AT_CAP)) for i in range(5)]
    before = snapshot(d)
    details = refused(lambda: create(cri, sid, pod, ctr("c5", pulled, annotations=AT_CAP)),
                      grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "containers listed take" in details
    assert changes(before, snapshot(d)) == {}, d.log_tail()
    answer = cri.runtime.ListContainers(api.ListContainersRequest())
    assert sorted(c.id for c in answer.containers) == sorted(ids) and answer.ByteSize() < LIMIT
    stats = cri.runtime.ListContainerStats(api.ListContainerStatsRequest())
    assert len(stats.stats) == 5 and stats.ByteSize() < LIMIT
    cri.runtime.RemoveContainer(api.RemoveContainerRequest(container_id=ids.pop()))
    ids.append(create(cri, sid, pod, ctr("c5", pulled, annotations=AT_CAP)))
    assert len(listed(cri)) == 5
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}, d.log_tail()

