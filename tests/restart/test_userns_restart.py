"""User-namespaced pods across daemon restarts and kill -9: a running pod is adopted again (its
user namespace pin with the others), and a daemon killed while a pod or a container of one is
being made leaves, after the next start, no idmapped mount, no namespace pin and no process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.faultbin import FaultyBinary
from tests.support.pods import changes, remove_pod, run_pod, snapshot, status as pod_status
from tests.support.registry import Registry
from tests.support.userns import RANGE
from tests.support.workloads import (
    WAIT,
    Pulled,
    create,
    exec_sync,
    faulty_runc,
    pulled_daemon,
    pulling_from,
    run_container,
    userns_container_config,
    userns_pod_config,
    start,
    status,
    wait_state,
)

pytestmark = pytest.mark.restart
_ = (pulled_daemon, faulty_runc)  # the `pulled` and `runc_wrapper` fixtures

@pytest.fixture
def daemon_overrides(registry: Registry, runc_wrapper: FaultyBinary) -> dict[str, Any]:
    """Pulls from the session's registry; runc is the fault wrapper (passing calls through until armed)."""
    return pulling_from(registry, runc=runc_wrapper)


def idmapped_mounts() -> list[str]:
    """Mounts of this namespace that are idmapped (mountinfo's idmapped option)."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if "idmapped" in line.split()[5].split(",")]


def restart_after_kill_9(daemon: Daemon, call: grpc.Future, runc_wrapper: FaultyBinary) -> Cri:
    """kill -9 while call waits on a hung runc (the call fails), the hung runc ended and the fault
    cleared, the daemon started again (recovery done): a client on it."""
    daemon.kill()
    with pytest.raises(grpc.RpcError):
        call.result(timeout=WAIT)
    runc_wrapper.kill_hung()
    runc_wrapper.clear()
    daemon.start()
    return Cri(daemon.endpoint)


def test_a_running_userns_pod_is_adopted_after_kill_9(pulled: Pulled) -> None:
    daemon, cri = pulled.daemon, pulled.cri
    pod = userns_pod_config(pulled.daemon, "adopted", 200000)
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, userns_container_config("first", 200000, pulled.image))
    daemon.kill()
    daemon.start()
    cri = Cri(daemon.endpoint)
    assert pod_status(cri, sid)[0].state == api.SANDBOX_READY
    assert status(cri, cid).state == api.CONTAINER_RUNNING
    assert exec_sync(cri, cid, "cat", "/proc/self/uid_map").stdout.split() == [b"0", b"200000", str(RANGE).encode()]
    # A new container joins the same user namespace, through the pin the restart kept.
    second = run_container(cri, sid, pod, userns_container_config("second", 200000, pulled.image))
    ns = [exec_sync(cri, c, "readlink", "/proc/self/ns/user").stdout for c in (cid, second)]
    assert ns[0] == ns[1] and ns[0].startswith(b"user:[")
    assert idmapped_mounts() == []  # the host side keeps none once the containers are made
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()


def test_kill_9_while_a_userns_container_is_created_leaves_no_idmapped_mount(pulled: Pulled,
                                                                             runc_wrapper: FaultyBinary) -> None:
    daemon, cri = pulled.daemon, pulled.cri
    pod = userns_pod_config(pulled.daemon, "interrupted", 300000)
    sid = run_pod(cri, pod)
    with_pod = snapshot(daemon)
    config = userns_container_config("interrupted", 300000, pulled.image)
    runc_wrapper.inject("create", "hang")
    call = cri.runtime.CreateContainer.future(api.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod))
    runc_wrapper.wait_hung()
    idmap = Path(daemon.config["paths"]["run_dir"]) / "idmap"
    attached = idmapped_mounts()
    assert attached and all(Path(m).parent.parent == idmap for m in attached), attached
    cri = restart_after_kill_9(daemon, call, runc_wrapper)
    assert idmapped_mounts() == []
    assert changes(with_pod, snapshot(daemon)) == {}, daemon.log_tail()
    cid = create(cri, sid, pod, config)  # kubelet's retry
    start(cri, cid)
    wait_state(cri, cid, api.CONTAINER_RUNNING)
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()


def test_kill_9_while_a_userns_pod_is_made_leaves_no_pin_or_process(pulled: Pulled, runc_wrapper: FaultyBinary) -> None:
    daemon, cri = pulled.daemon, pulled.cri
    pod = userns_pod_config(pulled.daemon, "half-made", 400000)
    runc_wrapper.inject("run", "hang")  # the infra container's start: the namespaces are pinned by then
    call = cri.runtime.RunPodSandbox.future(api.RunPodSandboxRequest(config=pod))
    runc_wrapper.wait_hung()
    pins = Path(daemon.config["paths"]["run_dir"]) / "ns" / "user"
    assert len(list(pins.iterdir())) == 1
    cri = restart_after_kill_9(daemon, call, runc_wrapper)
    assert list(pins.iterdir()) == []
    assert changes(pulled.before, snapshot(daemon)) == {}, daemon.log_tail()
    sid = run_pod(cri, pod)  # kubelet's retry
    assert pod_status(cri, sid)[0].state == api.SANDBOX_READY
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()


def test_kill_9_while_a_userns_pod_is_removed_and_the_retry_releases_everything(pulled: Pulled,
                                                                                 runc_wrapper: FaultyBinary) -> None:
    daemon, cri = pulled.daemon, pulled.cri
    pod = userns_pod_config(pulled.daemon, "removed", 500000)
    sid = run_pod(cri, pod)
    run_container(cri, sid, pod, userns_container_config("c", 500000, pulled.image))
    runc_wrapper.inject("delete", "hang")  # the container's, then the infra container's
    call = cri.runtime.RemovePodSandbox.future(api.RemovePodSandboxRequest(pod_sandbox_id=sid))
    runc_wrapper.wait_hung()
    cri = restart_after_kill_9(daemon, call, runc_wrapper)
    remove_pod(cri, sid)  # kubelet retries the removal it got no answer for
    assert idmapped_mounts() == []
    assert list((Path(daemon.config["paths"]["run_dir"]) / "ns" / "user").iterdir()) == []
    assert changes(pulled.before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()
