"""Sandbox creation under injected CNI faults: failures, a daemon killed mid-RunPodSandbox, retries."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon, merge
from tests.support.faultbin import FaultyBinary
from tests.support.faultcni import FaultyNetwork
from tests.support.leftovers import infra_processes, release_leftovers
from tests.support.pods import pod_config, remove_pod, run_pod, snapshot, status, stop_pod, warm_up
from tests.support.workloads import until

pytestmark = pytest.mark.fault


@contextlib.contextmanager
def faulty_daemon(overrides: dict[str, Any] | None = None) -> Iterator[tuple[Daemon, FaultyNetwork]]:
    """A daemon on the fault-injecting network (with these config overrides), released afterwards."""
    base = Path(tempfile.mkdtemp(prefix="csf", dir="/tmp"))
    net = FaultyNetwork(base)
    d = Daemon(merge(net.overrides(), overrides or {}))
    net.write_conflist(d.dir / "state" / "cni" / "ipam-faulty")
    try:
        d.start()
        yield d, net
    finally:
        net.kill_hung()
        d.stop()
        release_leftovers(d)
        shutil.rmtree(d.dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def faulty() -> Iterator[tuple[Daemon, FaultyNetwork]]:
    with faulty_daemon() as (d, net):
        yield d, net


def _warmed(faulty: tuple[Daemon, FaultyNetwork], mode: str) -> tuple[Cri, dict[str, object]]:
    """A client, after one pod went through, the leak snapshot to compare with, and the fault armed."""
    d, net = faulty
    cri = Cri(d.endpoint)
    warm_up(cri)
    before = snapshot(d)
    net.mode(mode)
    return cri, before


@pytest.mark.parametrize("mode", ["fail", "crash"])
def test_failed_add_is_rolled_back_and_a_retry_succeeds(faulty: tuple[Daemon, FaultyNetwork], mode: str) -> None:
    d, net = faulty
    cri, before = _warmed(faulty, mode)
    config = pod_config("doomed", port_mappings=[api.PortMapping(container_port=80, host_port=18071)])
    with pytest.raises(grpc.RpcError) as err:
        run_pod(cri, config)
    assert err.value.code() == grpc.StatusCode.INTERNAL and "pod network setup failed" in err.value.details()
    if mode == "fail":
        assert "injected failure" in err.value.details()
    assert snapshot(d) == before, d.log_tail()
    net.mode("pass")
    sid = run_pod(cri, config)  # the same metadata: the failed attempt released its name
    assert status(cri, sid)[0].state == api.SANDBOX_READY
    remove_pod(cri, sid)
    assert snapshot(d) == before
    cri.close()


@pytest.mark.restart
def test_daemon_killed_during_add_leaves_nothing_after_recovery(faulty: tuple[Daemon, FaultyNetwork]) -> None:
    d, net = faulty
    cri, before = _warmed(faulty, "hang")
    call = cri.runtime.RunPodSandbox.future(
        api.RunPodSandboxRequest(config=pod_config("crash", port_mappings=[api.PortMapping(container_port=80, host_port=18072)]))
    )
    net.wait_hung()
    until(lambda: bool(infra_processes(d)), "the infra process runs while the network is attached")
    d.kill()
    net.kill_hung()
    with pytest.raises(grpc.RpcError):
        call.result(timeout=30)
    cri.close()
    net.mode("pass")
    d.start()
    cri = Cri(d.endpoint)
    assert cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert snapshot(d) == before
    cri.close()


def test_retry_joins_the_attempt_in_flight_and_later_gets_its_id(faulty: tuple[Daemon, FaultyNetwork]) -> None:
    d, net = faulty
    cri = Cri(d.endpoint)
    net.mode("hold")
    request = api.RunPodSandboxRequest(config=pod_config("retry"))
    first = cri.runtime.RunPodSandbox.future(request, timeout=0.5)  # gives up, as a kubelet timeout does
    net.wait_hung()
    with pytest.raises(grpc.RpcError) as err:
        first.result()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    second = cri.runtime.RunPodSandbox.future(request)
    time.sleep(0.2)
    assert not second.done()
    net.release()
    sid = second.result(timeout=30).pod_sandbox_id
    assert cri.runtime.RunPodSandbox(request).pod_sandbox_id == sid
    assert net.adds() == [sid]
    st, _ = status(cri, sid)
    assert st.state == api.SANDBOX_READY and st.network.ip
    remove_pod(cri, sid)
    cri.close()


@pytest.mark.restart
def test_calls_during_recovery_answer_unavailable_and_no_pod_is_lost(faulty: tuple[Daemon, FaultyNetwork]) -> None:
    """kill -9 while pods run and one is being made; recovery (held at the DEL that rolls the
    half-made pod back) answers UNAVAILABLE, then every finished pod is back as it was."""
    d, net = faulty
    cri, before = _warmed(faulty, "pass")
    pods = {run_pod(cri, pod_config(f"kept{i}", labels={"i": str(i)})): i for i in range(3)}
    ips = {sid: status(cri, sid)[0].network.ip for sid in pods}
    net.mode("hang")
    request = api.RunPodSandboxRequest(config=pod_config("inflight"))
    call = cri.runtime.RunPodSandbox.future(request)
    net.wait_hung()
    d.kill()
    net.kill_hung()
    with pytest.raises(grpc.RpcError):
        call.result(timeout=30)
    cri.close()

    net.hold()
    net.mode("hold-del")
    d.start(wait=False)
    net.wait_hung()  # recovery is rolling the half-made pod back
    cri = Cri(d.endpoint)
    during = [
        lambda: cri.runtime.Version(api.VersionRequest()),
        lambda: cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()),
        lambda: cri.runtime.RunPodSandbox(request),
        lambda: cri.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=next(iter(pods)))),
        lambda: cri.image.ListImages(api.ListImagesRequest()),
    ]
    for call_during in during:
        with pytest.raises(grpc.RpcError) as err:
            call_during()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "recovering" in err.value.details()
    net.release()
    d.wait_ready()
    net.mode("pass")

    listed = {i.id: (i.state, i.labels["i"]) for i in cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items}
    assert listed == {sid: (api.SANDBOX_READY, str(i)) for sid, i in pods.items()}
    assert all(status(cri, sid)[0].network.ip == ip for sid, ip in ips.items())
    retried = run_pod(cri, request.config)  # the interrupted attempt's metadata is free again
    assert status(cri, retried)[0].state == api.SANDBOX_READY
    for sid in [*pods, retried]:
        remove_pod(cri, sid)
    assert snapshot(d) == before, d.log_tail()
    cri.close()


@pytest.mark.parametrize("mode", ["fail", "crash"])
def test_infra_process_failing_to_start_is_rolled_back_and_a_retry_succeeds(mode: str) -> None:
    """fail: runc made nothing; crash: the infra container runs, but its start was never answered."""
    base = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))
    infra = FaultyBinary(base, "runc")  # the handler runs the infra container with `runc run`
    d = Daemon({"runtime": {"handlers": {"runc": {"path": str(infra.path)}}, "default_handler": "runc"}})
    try:
        d.start()
        cri = Cri(d.endpoint)
        warm_up(cri)
        before = snapshot(d)
        infra.inject("run", mode)
        config = pod_config("noinfra", port_mappings=[api.PortMapping(container_port=80, host_port=18074)])
        with pytest.raises(grpc.RpcError) as err:
            run_pod(cri, config)
        assert err.value.code() == grpc.StatusCode.INTERNAL and "infra process" in err.value.details(), err.value.details()
        assert "run" in infra.calls()
        assert snapshot(d) == before, d.log_tail()
        infra.clear()
        sid = run_pod(cri, config)
        assert status(cri, sid)[0].state == api.SANDBOX_READY
        remove_pod(cri, sid)
        assert snapshot(d) == before
        cri.close()
    finally:
        d.stop()
        release_leftovers(d)
        shutil.rmtree(d.dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def test_hung_plugin_is_killed_at_the_plugin_timeout_and_rolled_back() -> None:
    with faulty_daemon({"network": {"plugin_timeout_seconds": 1}}) as (d, net):
        cri, before = _warmed((d, net), "hang")
        config = pod_config("slow", port_mappings=[api.PortMapping(container_port=80, host_port=18075)])
        with pytest.raises(grpc.RpcError) as err:
            run_pod(cri, config)
        assert err.value.code() == grpc.StatusCode.INTERNAL and "pod network setup failed" in err.value.details(), err.value.details()
        hung = net.wait_hung()
        assert not Path(f"/proc/{hung}").exists() or "Z" in Path(f"/proc/{hung}/stat").read_text().rsplit(")", 1)[1][:3]
        assert snapshot(d) == before, d.log_tail()
        net.mode("pass")
        remove_pod(cri, run_pod(cri, config))
        assert snapshot(d) == before
        cri.close()


@pytest.mark.restart
def test_clean_stop_during_add_rolls_the_pod_back(faulty: tuple[Daemon, FaultyNetwork]) -> None:
    """SIGTERM while RunPodSandbox waits on CNI ADD: the daemon abandons the attempt, rolls it back
    before exiting, and the next start finds nothing to do."""
    d, net = faulty
    cri, before = _warmed(faulty, "hold")
    call = cri.runtime.RunPodSandbox.future(api.RunPodSandboxRequest(config=pod_config("stopped-mid-add")))
    hung = net.wait_hung()
    assert d.stop() == 0
    with pytest.raises(grpc.RpcError):
        call.result(timeout=30)
    cri.close()
    assert not Path(f"/proc/{hung}").exists() or "Z" in Path(f"/proc/{hung}/stat").read_text().rsplit(")", 1)[1][:3]
    assert snapshot(d) == before, d.log_tail()  # rolled back by the stopping daemon itself
    net.mode("pass")
    d.start()
    cri = Cri(d.endpoint)
    assert cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert snapshot(d) == before, d.log_tail()
    cri.close()


def test_hung_del_is_killed_at_the_plugin_timeout_and_the_next_remove_finishes() -> None:
    with faulty_daemon({"network": {"plugin_timeout_seconds": 1}}) as (d, net):
        cri, before = _warmed((d, net), "pass")
        sid = run_pod(cri, pod_config("slowdel", port_mappings=[api.PortMapping(container_port=80, host_port=18076)]))
        net.mode("hold-del")
        stop_pod(cri, sid)  # DEL killed at the timeout: logged, and run again by the next Stop or Remove
        assert status(cri, sid)[0].state == api.SANDBOX_NOTREADY
        assert "no answer within 1.0s" in d.log_tail(200)
        net.mode("pass")
        remove_pod(cri, sid)
        assert snapshot(d) == before, d.log_tail()
        cri.close()
