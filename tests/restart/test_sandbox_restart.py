"""Sandboxes across daemon restarts: clean stop and SIGKILL keep ready pods, IPs and infra processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.leftovers import infra_processes
from tests.support.pods import http_get, pod_config, remove_pod, run_pod, serve_http, snapshot, status, stop_pod, warm_up

pytestmark = pytest.mark.restart


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_ready_sandboxes_survive_a_restart(daemon: Daemon, how: str) -> None:
    cri = Cri(daemon.endpoint)
    warm_up(cri)
    before = snapshot(daemon)
    ports = [api.PortMapping(container_port=8080, host_port=18100)]
    sid = run_pod(cri, pod_config("keep", port_mappings=ports, labels={"k": "v"}))
    stopped = run_pod(cri, pod_config("stopped"))
    stop_pod(cri, stopped)
    st1, info1 = status(cri, sid)
    server = serve_http(info1["namespaces"]["net"], 8080, daemon.dir / "www")
    cri.close()
    try:
        daemon.stop() if how == "sigterm" else daemon.kill()
        assert os.path.exists(f"/proc/{info1['pid']}"), "the infra process outlives the daemon"
        daemon.start()
        cri = Cri(daemon.endpoint)
        st2, info2 = status(cri, sid)
        assert st2.state == api.SANDBOX_READY and st2.network.ip == st1.network.ip and st2.created_at == st1.created_at
        assert dict(st2.labels) == {"k": "v"}
        assert (info2["pid"], info2["infraStartTime"]) == (info1["pid"], info1["infraStartTime"])
        assert status(cri, stopped)[0].state == api.SANDBOX_NOTREADY
        assert http_get(st2.network.ip, 8080) == "hello from the pod\n"
        assert http_get("127.0.0.1", 18100) == "hello from the pod\n"
    finally:
        server.kill()
        server.wait()
    remove_pod(cri, sid)
    remove_pod(cri, stopped)
    assert snapshot(daemon) == before
    cri.close()


def test_infra_gone_while_down_makes_the_sandbox_notready(daemon: Daemon) -> None:
    cri = Cri(daemon.endpoint)
    sid = run_pod(cri, pod_config("lost"))
    pid = status(cri, sid)[1]["pid"]
    cri.close()
    daemon.kill()
    os.kill(pid, signal.SIGKILL)
    daemon.start()
    cri = Cri(daemon.endpoint)
    assert status(cri, sid)[0].state == api.SANDBOX_NOTREADY
    stop_pod(cri, sid)
    remove_pod(cri, sid)
    assert infra_processes(daemon) == []
    cri.close()


def test_infra_killed_while_running_makes_the_sandbox_notready(daemon: Daemon) -> None:
    cri = Cri(daemon.endpoint)
    sid = run_pod(cri, pod_config("killed"))
    os.kill(status(cri, sid)[1]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while status(cri, sid)[0].state != api.SANDBOX_NOTREADY and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status(cri, sid)[0].state == api.SANDBOX_NOTREADY
    remove_pod(cri, sid)
    cri.close()


def test_recovery_kills_an_infra_process_whose_pid_was_never_recorded(daemon: Daemon) -> None:
    """A crash right after the spawn: the record (creating) names the infra cgroup but no pid."""
    from cri_shim.sandbox.record import Sandbox
    from cri_shim.store.records import RecordStore

    daemon.stop()
    state = Path(daemon.config["paths"]["state_dir"])
    sid = "f" * 64
    config = pod_config("crashed")
    parent = daemon.config["runtime"]["default_cgroup_parent"]
    record = Sandbox(
        id=sid, name="crashed/test-ns/uid-crashed/0", config=config, runtime_handler="", created_at=1,
        files_dir=str(state / "sandboxes" / sid), cgroup_driver="cgroupfs", cgroup_parent=parent,
        infra_cgroup=f"{parent}/{sid}",
    )
    RecordStore("sandbox", state / "records" / "sandboxes", Sandbox).save(record)
    orphan = subprocess.Popen(
        [shutil.which("catatonit") or "catatonit", "-P"], env={"CRI_SHIM_SANDBOX": sid}, start_new_session=True
    )
    try:
        daemon.start()
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        cri = Cri(daemon.endpoint)
        assert cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
        cri.close()
    finally:
        orphan.kill()
        orphan.wait()


def test_torn_record_is_dropped_and_everything_its_pod_held_is_released(daemon: Daemon) -> None:
    """A record that cannot be read (disk trouble, a bad edit) names nothing: recovery drops it and
    sweeps what no record owns, the pod's infra process and cgroups included."""
    cri = Cri(daemon.endpoint)
    warm_up(cri)
    before = snapshot(daemon)
    sid = run_pod(cri, pod_config("torn", port_mappings=[api.PortMapping(container_port=80, host_port=18110)]))
    cri.close()
    daemon.kill()
    record = Path(daemon.config["paths"]["state_dir"]) / "records" / "sandboxes" / f"{sid}.json"
    record.write_text(record.read_text()[:40])
    daemon.start()
    cri = Cri(daemon.endpoint)
    assert cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert snapshot(daemon) == before, daemon.log_tail()
    cri.close()
