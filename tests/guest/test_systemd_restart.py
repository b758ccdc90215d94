"""A crash of cri-shim under the systemd cgroup driver leaves nothing in systemd: a kill -9 while
`runc create` hangs (the container's monitor already in its transient scope), then a restart,
then the pod's removal, and systemd lists no unit of the pod and its slice holds no cgroup."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.faultbin import FaultyBinary
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import WAIT, Pulled, container_config, faulty_runc, listed, logged_pod, pulled_daemon
from tests.support.workloads import pulling_from, until

pytestmark = pytest.mark.guest
pulled = pulled_daemon
runc_wrapper = faulty_runc

SLICE = "crishimguest.slice"


@pytest.fixture
def daemon_overrides(registry: Registry, runc_wrapper: FaultyBinary) -> dict[str, Any]:
    overrides = pulling_from(registry, runc=runc_wrapper)
    overrides["runtime"].update(cgroup_driver="systemd", default_cgroup_parent=SLICE)
    return overrides


def units_of(*ids: str) -> list[str]:
    """systemd's loaded units, whatever their state, whose names hold any of ids."""
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend"],
                         check=True, capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if any(i in name for i in ids)]


def cgroups_in_slice() -> list[str]:
    directory = Path("/sys/fs/cgroup") / SLICE
    return sorted(d.name for d in directory.iterdir() if d.is_dir()) if directory.is_dir() else []


def test_kill_9_mid_create_leaves_no_scope_after_the_restart(pulled: Pulled, runc_wrapper: FaultyBinary) -> None:
    daemon, cri = pulled.daemon, pulled.cri
    pod = logged_pod(daemon, "crashed")
    sid = run_pod(cri, pod)
    monitors_before = set(units_of("cri-shim-conmon-"))
    runc_wrapper.inject("create", "hang")
    config = container_config("interrupted", "sleep", "600", image=pulled.image)
    call = cri.runtime.CreateContainer.future(api.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod))
    runc_wrapper.wait_hung(timeout=WAIT)
    # The monitor runs in its scope in the pod's slice, waiting on the hung create.
    monitors = [u for u in units_of("cri-shim-conmon-") if u not in monitors_before]
    assert len(monitors) == 1, monitors
    cid = monitors[0].removeprefix("cri-shim-conmon-").removesuffix(".scope")
    daemon.kill()
    with pytest.raises(grpc.RpcError):
        call.result(timeout=WAIT)
    assert units_of(cid), "the monitor's scope outlives the daemon"
    runc_wrapper.clear()
    daemon.start()
    cri = Cri(daemon.endpoint)
    # The restart discards the interrupted create: its monitor and the hung call end, and systemd
    # removes the monitor's scope with its last process.
    until(lambda: not units_of(cid), "the interrupted create's scopes going")
    assert listed(cri) == []
    remove_pod(cri, sid)
    until(lambda: not units_of(sid, cid), "the pod's scopes going")
    assert cgroups_in_slice() == []
    assert changes(pulled.before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()
