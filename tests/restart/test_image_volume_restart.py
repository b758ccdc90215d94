"""Image volumes across daemon restarts: a running container keeps its volume and releases it
when removed afterwards; one whose create was killed midway is released at the next start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.faultbin import FaultyBinary
from tests.support.imagevolumes import image_mount, push_volume_image
from tests.support.leftovers import container_processes
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    FOREVER,
    WAIT,
    Pulled,
    container_config,
    exec_sync,
    faulty_runc,
    listed,
    logged_pod,
    pull,
    pulled_daemon,
    pulling_from,
    remove,
    run_container,
    until,
)

pytestmark = pytest.mark.restart
_ = (pulled_daemon, faulty_runc)  # the `pulled` and `runc_wrapper` fixtures


@pytest.fixture
def daemon_overrides(registry: Registry, runc_wrapper: FaultyBinary) -> dict[str, Any]:
    return pulling_from(registry, runc=runc_wrapper)


@pytest.fixture(scope="module")
def volume_ref(registry: Registry) -> str:
    return push_volume_image(registry)


def overlays(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [m.split()[0] for m in changes(before, after).get("mounts", {}).get("added", []) if m.endswith(" overlay")]


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_a_volume_of_a_running_container_is_released_after_a_restart(pulled: Pulled, volume_ref: str, how: str) -> None:
    daemon, cri = pulled.daemon, pulled.cri
    volume = pull(cri, volume_ref)
    pod = logged_pod(daemon, "imgvol")
    sid = run_pod(cri, pod)
    with_pod = snapshot(daemon)
    cid = run_container(cri, sid, pod, container_config("app", "sh", "-c", FOREVER, image=pulled.image,
                                                        mounts=[image_mount("/vol", volume, "data")]))
    daemon.kill() if how == "sigkill" else daemon.stop()
    daemon.start()
    cri = Cri(daemon.endpoint)
    answer = exec_sync(cri, cid, "cat", "/vol/hello.txt")
    assert (answer.exit_code, answer.stdout) == (0, b"hello\n"), answer
    remove(cri, cid)
    assert changes(with_pod, snapshot(daemon)) == {}, daemon.log_tail()
    remove_pod(cri, sid)
    cri.close()


def test_a_volume_of_a_create_killed_midway_is_released_at_the_next_start(pulled: Pulled, volume_ref: str,
                                                                          runc_wrapper: FaultyBinary) -> None:
    daemon, cri = pulled.daemon, pulled.cri
    volume = pull(cri, volume_ref)
    pod = logged_pod(daemon, "imgvol-interrupted")
    sid = run_pod(cri, pod)
    with_pod = snapshot(daemon)
    config = container_config("app", "sleep", "600", image=pulled.image, mounts=[image_mount("/vol", volume)])
    runc_wrapper.inject("create", "hang")
    call = cri.runtime.CreateContainer.future(api.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod))
    hung = runc_wrapper.wait_hung()
    rootfs = Path(daemon.config["paths"]["state_dir"]) / "rootfs"
    [container_dir] = os.listdir(rootfs)
    assert sorted(overlays(with_pod, snapshot(daemon))) == [str(rootfs / container_dir / "images" / "0"),
                                                            str(rootfs / container_dir / "rootfs")]
    daemon.kill()
    with pytest.raises(grpc.RpcError):
        call.result(timeout=WAIT)
    runc_wrapper.clear()
    daemon.start()
    cri = Cri(daemon.endpoint)
    until(lambda: hung not in container_processes(daemon), "the hung runc call ending")
    assert listed(cri) == []
    assert changes(with_pod, snapshot(daemon)) == {}, daemon.log_tail()
    assert os.listdir(rootfs) == []
    remove_pod(cri, sid)
    cri.close()
