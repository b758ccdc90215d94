"""cri-shim on a real node (systemd as PID 1, cgroup v2 unified, AppArmor): pods and containers
with both cgroup drivers, their resources in the v2 files, and nothing left in systemd after.

With the cgroupfs driver cri-shim and runc write the cgroup tree below the daemon's own parent;
with the systemd driver the pod's parent is a slice and the runtime asks systemd (over D-Bus) for
each container's scope, so systemd owns those cgroups and lists them as units. The tests whose
outcome depends on the handler run the systemd driver under crun as well (the handler the daemon
picks by default on this node): crun runs the container's processes in a child cgroup of the
scope, "container", and writes the limits there, so the checks follow the process's own cgroup up
to the container's (the scope, whose counters cri-shim reads).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cri_shim.cgroups import hierarchy, paths
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


# The tests where the handler matters: both drivers under runc, and the systemd driver under crun
# (with the cgroupfs driver crun makes no child cgroup, and cri-shim's part is the same as runc's).
HANDLERS = pytest.mark.parametrize(("driver", "handler"), [("cgroupfs", "runc"), ("systemd", "runc"), ("systemd", "crun")])


@pytest.fixture
def handler() -> str:
    """The runtime handler of the daemon's pods; HANDLERS names crun too."""
    return "runc"


@pytest.fixture
def daemon_overrides(driver: str, handler: str, registry: Registry) -> dict[str, Any]:
    runtime: dict[str, Any] = {"cgroup_driver": driver, "default_pids_limit": PIDS_LIMIT, "default_handler": handler}
    if driver == "systemd":
        runtime["default_cgroup_parent"] = "crishimguest.slice"
    return {**pulling_from(registry), "runtime": runtime}


def cgroup_of(pid: int) -> Path:
    """The process's cgroup directory in the unified hierarchy."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return CGROUP / line[3:].lstrip("/")
    raise AssertionError(f"process {pid} is in no v2 cgroup")


def container_cgroup(pid: int, handler: str, driver: str) -> Path:
    """The container's cgroup, the one its cgroupsPath names and cri-shim reads counters from:
    the process's own, or under crun's systemd driver the scope whose child "container" holds it."""
    cgroup = cgroup_of(pid)
    if (handler, driver) == ("crun", "systemd"):
        assert cgroup.name == "container" and cgroup.parent.name.endswith(".scope"), cgroup
        return cgroup.parent
    return cgroup


def chain(pid: int, top: Path, name: str) -> list[str]:
    """A cgroup file's first line in the process's cgroup and each ancestor up to top: a limit
    holds for the process wherever on that chain the runtime wrote it."""
    cgroup, values = cgroup_of(pid), []
    while True:
        values.append((cgroup / name).read_text().split("\n")[0].strip())
        if cgroup == top:
            return values
        assert cgroup != CGROUP, f"{top} is no ancestor of process {pid}'s cgroup"
        cgroup = cgroup.parent


def tightest(pid: int, top: Path, name: str) -> int | None:
    """The smallest of a limit file's values ("max" or a number) on the chain; None: none set."""
    numbers = [int(v) for v in chain(pid, top, name) if v != "max"]
    return min(numbers) if numbers else None


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


@HANDLERS
def test_container_resources_land_in_the_v2_files(pulled: Pulled, driver: str, handler: str) -> None:
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
    cgroup = container_cgroup(pid, handler, driver)
    monitor = cgroup_of(info["monitorPid"])
    if driver == "systemd":
        # The systemd driver: a scope systemd made, below the pod's slice; conmon in a scope
        # of its own there, outside the daemon's cgroup (so outside any unit the daemon runs in).
        assert cgroup.name == f"cri-shim-{cid}.scope" and cgroup.parent.name == "crishimguest.slice"
        assert monitor.name == f"cri-shim-conmon-{cid}.scope" and monitor.parent.name == "crishimguest.slice"
        assert {cgroup.name, monitor.name} <= set(units("scope"))
    else:
        assert str(cgroup).startswith(str(CGROUP / pulled.daemon.dir.name))
        assert monitor == cgroup_of(pulled.daemon.proc.pid)
    assert tightest(pid, cgroup, "memory.max") == 64 * MiB
    assert tightest(pid, cgroup, "memory.swap.max") == 0  # swap limit unset: equal to memory, so no swap on top
    assert "50000 100000" in chain(pid, cgroup, "cpu.max")
    assert set(chain(pid, cgroup, "cpu.weight")) != {"100"}  # shares 512 of the default 1024, converted
    assert (cgroup_of(pid) / "cpuset.cpus.effective").read_text().strip() == "0"
    assert tightest(pid, cgroup, "pids.max") == PIDS_LIMIT
    # ContainerStats from cpu.stat and memory.current/memory.stat of the container's cgroup, and
    # the limit it is under.
    stats = cri.runtime.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert stats.cpu.usage_core_nano_seconds.value > 0 and stats.memory.working_set_bytes.value > 0
    assert 0 < stats.memory.available_bytes.value <= 64 * MiB - stats.memory.working_set_bytes.value
    # UpdateContainerResources through the handler's update, into the files that limit the process.
    update = api.LinuxContainerResources(memory_limit_in_bytes=128 * MiB, cpu_period=100000, cpu_quota=25000)
    cri.runtime.UpdateContainerResources(api.UpdateContainerResourcesRequest(container_id=cid, linux=update))
    assert tightest(pid, cgroup, "memory.max") == 128 * MiB
    assert "25000 100000" in chain(pid, cgroup, "cpu.max") and "50000 100000" not in chain(pid, cgroup, "cpu.max")
    stats = cri.runtime.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert 64 * MiB < stats.memory.available_bytes.value <= 128 * MiB - stats.memory.working_set_bytes.value
    remove_pod(cri, sid)
    assert not cgroup.exists()
    until(lambda: not [u for u in units("scope") if cid in u], "the container's and its monitor's scopes going")
    assert not os.path.exists(f"/proc/{pid}")
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


@HANDLERS
def test_oom_kill_is_reported_from_memory_events(pulled: Pulled, driver: str, handler: str) -> None:
    """With the systemd driver the container's scope, memory.events with it, is gone as soon as
    its last process is: the daemon knows of the kill from watching the file while it ran (the
    scope's, which counts the kills in crun's child cgroup too)."""
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


def keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (cpu.stat, memory.stat, memory.events)."""
    return {key: int(value) for key, value in (line.split() for line in path.read_text().splitlines())}


def kubelet_parent(driver: str, name: str) -> str:
    """A pod-level cgroup parent of the kind kubelet makes for each pod (its own slice with the
    systemd driver), so that the pod has a cgroup of its own."""
    return f"crishimguest-{name}.slice" if driver == "systemd" else f"/crishimguest/{name}"


def drop_parent(driver: str, parent: str) -> None:
    """What kubelet does once the pod is gone: stops the pod's slice, or removes its directories."""
    if driver == "systemd":
        subprocess.run(["systemctl", "stop", parent], check=True)
        assert parent not in units("slice")
    else:
        for directory in (CGROUP / parent.strip("/"), CGROUP / parent.strip("/").split("/")[0]):
            if directory.exists():  # the runtime prunes the directories it made itself
                directory.rmdir()


@HANDLERS
def test_pod_and_container_stats_from_cpu_stat_and_memory_stat(pulled: Pulled, driver: str, handler: str) -> None:
    cri = pulled.cri
    parent = kubelet_parent(driver, "podstats")
    pod = logged_pod(pulled.daemon, "stats", linux=api.LinuxPodSandboxConfig(cgroup_parent=parent))
    sid = run_pod(cri, pod)
    # Some CPU first, then a resident buffer of a few MiB (busybox sh holds its variables).
    busy = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; x=$(head -c 4000000 /dev/zero | tr '\\0' a); " + FOREVER
    cid = run_container(cri, sid, pod, container_config("busy", "sh", "-c", busy, image=pulled.image))
    cgroup = container_cgroup(verbose_info(cri, cid)["pid"], handler, driver)
    pod_cgroup = CGROUP / paths.parent_path(driver, parent).lstrip("/")

    def usage_usec(directory: Path) -> int:
        return keyed(directory / "cpu.stat")["usage_usec"]

    until(lambda: usage_usec(cgroup) > 0 and keyed(cgroup / "memory.stat")["anon"] > 2 * MiB,
          "the container's CPU time and its buffer")
    low, pod_low = usage_usec(cgroup), usage_usec(pod_cgroup)
    container = cri.runtime.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    pod_stats = cri.runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats
    high, pod_high = usage_usec(cgroup), usage_usec(pod_cgroup)
    # The counters are cpu.stat's usage_usec (in ns) and memory.stat's, read between our own reads.
    assert low * 1000 <= container.cpu.usage_core_nano_seconds.value <= high * 1000
    memory = container.memory
    assert memory.usage_bytes.value >= memory.working_set_bytes.value > 2 * MiB
    assert memory.rss_bytes.value > 2 * MiB  # memory.stat's anon
    assert pod_stats.attributes.id == sid
    linux = pod_stats.linux
    assert pod_low * 1000 <= linux.cpu.usage_core_nano_seconds.value <= pod_high * 1000  # the pod's own cgroup
    assert linux.cpu.usage_core_nano_seconds.value >= container.cpu.usage_core_nano_seconds.value
    assert linux.memory.working_set_bytes.value >= memory.working_set_bytes.value
    assert [c.attributes.id for c in linux.containers] == [cid]
    assert linux.process.process_count.value >= 1
    listed_stats = cri.runtime.ListPodSandboxStats(
        api.ListPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter(id=sid))).stats
    assert [s.attributes.id for s in listed_stats] == [sid]
    assert listed_stats[0].linux.cpu.usage_core_nano_seconds.value >= linux.cpu.usage_core_nano_seconds.value
    remove_pod(cri, sid)
    drop_parent(driver, parent)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


HUGE_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")


@HANDLERS
def test_hugetlb_and_io_weight_land_in_the_v2_files(pulled: Pulled, driver: str, handler: str) -> None:
    """hugepage_limits become hugetlb.2MB.max (scripts/guest reserves 2 MiB pages on the kernel
    command line); io.weight, which CRI carries only in the unified map, becomes io.weight."""
    controllers = (CGROUP / "cgroup.controllers").read_text().split()
    if "hugetlb" not in controllers or not HUGE_2M.is_dir() or int((HUGE_2M / "nr_hugepages").read_text()) == 0:
        pytest.skip("this kernel has no 2 MiB huge pages configured, or no hugetlb controller")
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "huge")
    sid = run_pod(cri, pod)
    resources = api.LinuxContainerResources(
        hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=4 * MiB)], unified={"io.weight": "default 300"})
    config = container_config("app", "sh", "-c", FOREVER, image=pulled.image,
                              linux=api.LinuxContainerConfig(resources=resources))
    cid = run_container(cri, sid, pod, config)
    pid = verbose_info(cri, cid)["pid"]
    cgroup = container_cgroup(pid, handler, driver)
    assert tightest(pid, cgroup, "hugetlb.2MB.max") == 4 * MiB
    assert "default 300" in chain(pid, cgroup, "io.weight")
    remove_pod(cri, sid)
    assert not cgroup.exists()
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}
