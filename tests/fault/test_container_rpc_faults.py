"""The container RPCs on a daemon whose runc fails or hangs on request (tests/support/faultbin.py):
each failure is reported, leaves nothing behind, and the same request works once runc does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import api
from tests.support.faultbin import FaultyBinary
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    pulling_from,
    WAIT,
    Pulled,
    container_config,
    create,
    faulty_runc,
    listed,
    logged_pod,
    pulled_daemon,
    remove,
    run_container,
    start,
    status,
    stop,
    until,
    wait_state,
)

pytestmark = pytest.mark.fault


@pytest.fixture
def daemon_overrides(registry: Registry, runc_wrapper: FaultyBinary) -> dict[str, Any]:
    return pulling_from(registry, runc=runc_wrapper)


@pytest.mark.parametrize("mode", ["fail", "crash"])
def test_failed_create_leaves_nothing_and_frees_the_name(pulled: Pulled, runc_wrapper: FaultyBinary, mode: str) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "failing")
    sid = run_pod(cri, pod)
    with_pod = snapshot(pulled.daemon)
    config = container_config("retried", "sleep", "600", image=pulled.image)
    runc_wrapper.inject("create", mode)
    with pytest.raises(grpc.RpcError) as err:
        create(cri, sid, pod, config)
    assert err.value.code() == grpc.StatusCode.INTERNAL, err.value.details()
    assert listed(cri) == []
    assert changes(with_pod, snapshot(pulled.daemon)) == {}
    runc_wrapper.clear()
    cid = create(cri, sid, pod, config)
    start(cri, cid)
    assert status(cri, cid).state == api.CONTAINER_RUNNING
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_failed_start_is_reported_and_removable(pulled: Pulled, runc_wrapper: FaultyBinary) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "nostart")
    sid = run_pod(cri, pod)
    cid = create(cri, sid, pod, container_config("nostart", "sleep", "600", image=pulled.image))
    runc_wrapper.inject("start", "fail")
    with pytest.raises(grpc.RpcError) as err:
        start(cri, cid)
    assert err.value.code() == grpc.StatusCode.INTERNAL and "injected runc failure" in err.value.details()
    st = status(cri, cid)
    assert (st.state, st.reason, st.exit_code, st.started_at) == (api.CONTAINER_EXITED, "StartError", 128, 0)
    assert "injected runc failure" in st.message
    runc_wrapper.clear()
    remove(cri, cid)
    assert listed(cri) == []
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_remove_pod_while_a_create_hangs(pulled: Pulled, runc_wrapper: FaultyBinary) -> None:
    """RemovePodSandbox does not wait for a create stuck in runc: it ends the create's monitor and
    the hung call, the create fails, and nothing of either is left."""
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "doomed")
    sid = run_pod(cri, pod)
    runc_wrapper.inject("create", "hang")
    request = api.CreateContainerRequest(pod_sandbox_id=sid, config=container_config("stuck", "true", image=pulled.image), sandbox_config=pod)
    call = cri.runtime.CreateContainer.future(request)
    runc_wrapper.wait_hung()
    remove_pod(cri, sid)
    with pytest.raises(grpc.RpcError) as err:
        call.result(timeout=WAIT)
    assert err.value.code() != grpc.StatusCode.OK
    runc_wrapper.clear()
    assert listed(cri) == [] and cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_a_hung_start_does_not_block_other_containers(pulled: Pulled, runc_wrapper: FaultyBinary) -> None:
    """One container's start stuck in runc holds that container only: another pod's container is
    created, started and exits meanwhile; once the hung call dies, the start fails as StartError."""
    cri = pulled.cri
    stuck_pod, other_pod = logged_pod(pulled.daemon, "stuck"), logged_pod(pulled.daemon, "other")
    stuck_sid, other_sid = run_pod(cri, stuck_pod), run_pod(cri, other_pod)
    stuck = create(cri, stuck_sid, stuck_pod, container_config("stuck", "sleep", "600", image=pulled.image))
    runc_wrapper.inject("start", "hang")
    call = cri.runtime.StartContainer.future(api.StartContainerRequest(container_id=stuck))
    runc_wrapper.wait_hung()
    runc_wrapper.clear()
    other = create(cri, other_sid, other_pod, container_config("other", "sh", "-c", "exit 6", image=pulled.image))
    start(cri, other)
    assert wait_state(cri, other, api.CONTAINER_EXITED).exit_code == 6
    runc_wrapper.kill_hung()
    with pytest.raises(grpc.RpcError) as err:
        call.result(timeout=WAIT)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert status(cri, stuck).reason == "StartError"
    for sid in (stuck_sid, other_sid):
        remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def _stopped_with_a_release_fault(pulled: Pulled, runc_wrapper: FaultyBinary, name: str,
                                  mode: str) -> tuple[str, str, dict[str, Any]]:
    """A container stopped while `runc delete` has the fault mode: (pod id, container id, the leak
    snapshot with the pod alone)."""
    pod = logged_pod(pulled.daemon, name)
    sid = run_pod(pulled.cri, pod)
    with_pod = snapshot(pulled.daemon)
    cid = run_container(pulled.cri, sid, pod, container_config(name, "sleep", "600", image=pulled.image))
    runc_wrapper.inject("delete", mode)
    stop(pulled.cri, cid)
    assert status(pulled.cri, cid).state == api.CONTAINER_EXITED  # the stop is not held up by the release
    return sid, cid, with_pod


def _nothing_left(pulled: Pulled, sid: str, with_pod: dict[str, Any]) -> None:
    assert listed(pulled.cri) == []
    assert changes(with_pod, snapshot(pulled.daemon)) == {}, pulled.daemon.log_tail()
    remove_pod(pulled.cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_remove_during_a_release_at_exit_that_hangs(pulled: Pulled, runc_wrapper: FaultyBinary) -> None:
    """The release a container's exit starts is stuck in `runc delete`: RemoveContainer waits for
    it rather than race it; once the hung call dies the release gives up, and RemoveContainer
    deletes and unmounts what the release did not, leaving nothing."""
    sid, cid, with_pod = _stopped_with_a_release_fault(pulled, runc_wrapper, "hung-release", "hang")
    runc_wrapper.wait_hung()
    call = pulled.cri.runtime.RemoveContainer.future(api.RemoveContainerRequest(container_id=cid))
    with pytest.raises(grpc.FutureTimeoutError):
        call.result(timeout=1)  # held by the release under way
    runc_wrapper.clear()
    runc_wrapper.kill_hung()
    call.result(timeout=WAIT)
    _nothing_left(pulled, sid, with_pod)


def test_remove_after_a_release_at_exit_that_failed(pulled: Pulled, runc_wrapper: FaultyBinary) -> None:
    """`runc delete` fails at the exit: the release stops there (the root stays mounted), and
    RemoveContainer does all of it."""
    sid, cid, with_pod = _stopped_with_a_release_fault(pulled, runc_wrapper, "failed-release", "fail")
    until(lambda: "delete" in runc_wrapper.calls(), "the release at exit running runc delete")
    assert os.path.ismount(Path(pulled.daemon.config["paths"]["state_dir"]) / "rootfs" / cid / "rootfs")
    runc_wrapper.clear()
    remove(pulled.cri, cid)
    _nothing_left(pulled, sid, with_pod)
