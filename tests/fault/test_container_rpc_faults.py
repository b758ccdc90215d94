"""The container RPCs on a daemon whose runc fails or hangs on request (tests/support/faultbin.py):
each failure is reported, leaves nothing behind, and the same request works once runc does."""

from __future__ import annotations

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
    start,
    status,
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
