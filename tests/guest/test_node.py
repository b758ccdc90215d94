"""cri-shim on a real node (systemd as PID 1, cgroup v2 unified, AppArmor): pods and containers
with both cgroup drivers, their resources in the v2 files, and nothing left in systemd after.

With the cgroupfs driver cri-shim and runc write the cgroup tree below the daemon's own parent;
with the systemd driver the pod's parent is a slice and runc asks systemd (over D-Bus) for each
container's scope, so systemd owns those cgroups and lists them as units.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cri_shim.cgroups import hierarchy
from tests.support.client import api
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import FOREVER, Pulled, container_config, logged_pod, pulled_daemon, pulling_from
from tests.support.workloads import run_container, status, until, verbose_info, wait_state

pytestmark = pytest.mark.guest
pulled = pulled_daemon

CGROUP = Path("/sys/fs/cgroup")
MiB = 1024 * 1024
PIDS_LIMIT = 77


@pytest.fixture(params=["cgroupfs", "systemd"])
def driver(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def daemon_overrides(driver: str, registry: Registry) -> dict[str, Any]:
    runtime: dict[str, Any] = {"cgroup_driver": driver, "default_pids_limit": PIDS_LIMIT}
    if driver == "systemd":
        runtime["default_cgroup_parent"] = "crishimguest.slice"
    return {**pulling_from(registry), "runtime": runtime}


def cgroup_of(pid: int) -> Path:
    """The process's cgroup directory in the unified hierarchy."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return CGROUP / line[3:].lstrip("/")
    raise AssertionError(f"process {pid} is in no v2 cgroup")


def units(kind: str) -> list[str]:
    """The names of systemd's loaded units of one kind (scope, slice), whatever their state."""
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", f"--type={kind}"],
                         check=True, capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_the_node_is_systemd_cgroup_v2_and_apparmor() -> None:
    assert Path("/proc/1/comm").read_text().strip() == "systemd"
    assert hierarchy.detect().unified
    assert Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"


def test_status_and_runtime_config(pulled: Pulled, driver: str) -> None:
    conditions = {c.type: c.status for c in pulled.cri.runtime.Status(api.StatusRequest()).status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    answer = pulled.cri.runtime.RuntimeConfig(api.RuntimeConfigRequest())
    assert answer.linux.cgroup_driver == (api.SYSTEMD if driver == "systemd" else api.CGROUPFS)


def test_container_resources_land_in_the_v2_files(pulled: Pulled, driver: str) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "resources")
    sid = run_pod(cri, pod)
    resources = api.LinuxContainerResources(
        memory_limit_in_bytes=64 * MiB, cpu_period=100000, cpu_quota=50000, cpu_shares=512, cpuset_cpus="0")
    config = container_config("app", "sh", "-c", FOREVER, image=pulled.image,
                              linux=api.LinuxContainerConfig(resources=resources))
    cid = run_container(cri, sid, pod, config)
    info = verbose_info(cri, cid)
    pid = info["pid"]
    cgroup = cgroup_of(pid)
    monitor = cgroup_of(info["monitorPid"])
    if driver == "systemd":
        # runc's systemd driver: a scope systemd made, below the pod's slice; conmon in a scope
        # of its own there, outside the daemon's cgroup (so outside any unit the daemon runs in).
        assert cgroup.name == f"cri-shim-{cid}.scope" and cgroup.parent.name == "crishimguest.slice"
        assert monitor.name == f"cri-shim-conmon-{cid}.scope" and monitor.parent.name == "crishimguest.slice"
        assert {cgroup.name, monitor.name} <= set(units("scope"))
    else:
        assert str(cgroup).startswith(str(CGROUP / pulled.daemon.dir.name))
        assert monitor == cgroup_of(pulled.daemon.proc.pid)
    files = {name: (cgroup / name).read_text().strip() for name in
             ("memory.max", "memory.swap.max", "cpu.max", "cpu.weight", "cpuset.cpus", "pids.max")}
    assert files["memory.max"] == str(64 * MiB)
    assert files["memory.swap.max"] == "0"  # swap limit unset: equal to memory, so no swap on top
    assert files["cpu.max"] == "50000 100000"
    assert files["cpu.weight"] != "100"  # shares 512 of the default 1024, converted by runc
    assert files["cpuset.cpus"] == "0"
    assert files["pids.max"] == str(PIDS_LIMIT)
    # ContainerStats from cpu.stat and memory.current/memory.stat.
    stats = cri.runtime.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert stats.cpu.usage_core_nano_seconds.value > 0 and stats.memory.working_set_bytes.value > 0
    # UpdateContainerResources through runc update, into the same files.
    update = api.LinuxContainerResources(memory_limit_in_bytes=128 * MiB, cpu_period=100000, cpu_quota=25000)
    cri.runtime.UpdateContainerResources(api.UpdateContainerResourcesRequest(container_id=cid, linux=update))
    assert (cgroup / "memory.max").read_text().strip() == str(128 * MiB)
    assert (cgroup / "cpu.max").read_text().strip() == "25000 100000"
    remove_pod(cri, sid)
    assert not cgroup.exists()
    until(lambda: not [u for u in units("scope") if cid in u], "the container's and its monitor's scopes going")
    assert not os.path.exists(f"/proc/{pid}")
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


# Not yet with the systemd driver: systemd removes a container's scope, memory.events with it,
# as soon as its last process is gone, and the daemon reads the file only once it learns of the
# exit: OOMKilled or Error by a race (each seen once here). Reading memory.events while the
# container runs (as conmon's and containerd's watchers do) would close it.
@pytest.mark.parametrize("driver", ["cgroupfs"])
def test_oom_kill_is_reported_from_memory_events(pulled: Pulled, driver: str) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "oom")
    sid = run_pod(cri, pod)
    resources = api.LinuxContainerResources(memory_limit_in_bytes=16 * MiB)
    config = container_config("hog", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1", image=pulled.image,
                              linux=api.LinuxContainerConfig(resources=resources))
    cid = run_container(cri, sid, pod, config)
    final = wait_state(cri, cid, api.CONTAINER_EXITED)
    assert (final.exit_code, final.reason) == (137, "OOMKilled")
    assert status(cri, cid).state == api.CONTAINER_EXITED
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}
