"""Ten clients starting pods at once, as kubelet's pod workers do: every pod start (RunPodSandbox,
CreateContainer, StartContainer) succeeds with a running container of its own, each pod keeps
its own record, network and files, requests for the same pod or container at the same time
still make one, and once all are torn down at once nothing is left. Speed is the benchmark's
business (scripts/bench): nothing here is timed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.client import Cri, api
from tests.support.pods import changes, remove_pod, run_pod, snapshot, status as pod_status
from tests.support.registry import Registry
from tests.support import workloads
from tests.support.workloads import FOREVER, Pulled, pulled_daemon

_ = pulled_daemon  # the `pulled` fixture

pytestmark = pytest.mark.integration

CLIENTS = 10
ROUNDS = 2  # pods per client, one after another


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return workloads.pulling_from(registry)


def test_ten_clients_start_pods_at_once_and_nothing_is_left(pulled: Pulled) -> None:
    d = pulled.daemon
    clients = [Cri(d.endpoint) for _ in range(CLIENTS)]

    def start_pods(n: int) -> list[tuple[str, str]]:
        cri, made = clients[n], []
        for i in range(ROUNDS):
            pod = workloads.logged_pod(d, f"conc-{n}-{i}")
            sandbox_id = run_pod(cri, pod)
            config = workloads.container_config("app", "sh", "-c", FOREVER, image=pulled.image)
            container_id = workloads.create(cri, sandbox_id, pod, config)
            workloads.start(cri, container_id)
            made.append((sandbox_id, container_id))
        return made

    def tear_down(made: list[tuple[str, str]], n: int) -> None:
        cri = clients[n]
        for sandbox_id, container_id in made:
            workloads.stop(cri, container_id)
            cri.runtime.RemoveContainer(api.RemoveContainerRequest(container_id=container_id))
            remove_pod(cri, sandbox_id)

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            made = list(pool.map(start_pods, range(CLIENTS)))
            pods = [pair for per_client in made for pair in per_client]
            assert len({s for s, _ in pods}) == len({c for _, c in pods}) == CLIENTS * ROUNDS
            ips = set()
            for sandbox_id, container_id in pods:
                sandbox, info = pod_status(pulled.cri, sandbox_id)
                assert sandbox.state == api.SANDBOX_READY
                assert workloads.status(pulled.cri, container_id).state == api.CONTAINER_RUNNING
                ips.add(sandbox.network.ip)
                assert info["id"] == sandbox_id and sandbox.metadata.name.startswith("conc-")
            assert len(ips) == CLIENTS * ROUNDS and "" not in ips  # one address each
            listed = pulled.cri.runtime.ListContainers(api.ListContainersRequest()).containers
            assert {(c.pod_sandbox_id, c.id) for c in listed} == set(pods)
            list(pool.map(tear_down, made, range(CLIENTS)))
        assert pulled.cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
        assert changes(pulled.before, snapshot(d)) == {}, d.log_tail()
    finally:
        for cri in clients:
            cri.close()


def test_concurrent_creates_of_one_container_make_one(pulled: Pulled) -> None:
    """Five clients sending the same CreateContainer into each of four pods at once get one
    container per pod (kubelet retries a create it timed out on); removing them leaves nothing."""
    d = pulled.daemon
    clients = [Cri(d.endpoint) for _ in range(5)]
    pods = [workloads.logged_pod(d, f"dupc-{i}") for i in range(4)]
    try:
        sandbox_ids = [run_pod(pulled.cri, pod) for pod in pods]
        config = workloads.container_config("app", "sh", "-c", FOREVER, image=pulled.image)
        calls = [(c, p) for c in range(len(clients)) for p in range(len(pods))]
        with ThreadPoolExecutor(len(calls)) as pool:
            ids = list(pool.map(lambda a: workloads.create(clients[a[0]], sandbox_ids[a[1]], pods[a[1]], config), calls))
        by_pod = [{ids[i] for i, (_, p) in enumerate(calls) if p == pod} for pod in range(len(pods))]
        assert all(len(same) == 1 for same in by_pod), by_pod
        listed = pulled.cri.runtime.ListContainers(api.ListContainersRequest()).containers
        assert sorted(c.id for c in listed) == sorted(next(iter(same)) for same in by_pod)
        for sandbox_id in sandbox_ids:
            remove_pod(pulled.cri, sandbox_id)
        assert changes(pulled.before, snapshot(d)) == {}, d.log_tail()
    finally:
        for cri in clients:
            cri.close()
