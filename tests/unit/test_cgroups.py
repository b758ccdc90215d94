"""Cgroup naming for both drivers, slice expansion, hierarchy detection, creation and pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from cri_shim.cgroups import CgroupPathError, container_cgroups_path, normalize_parent, relative_path
from cri_shim.cgroups import hierarchy
from cri_shim.cgroups.paths import parent_path
from cri_shim.linux import mountinfo

pytestmark = pytest.mark.unit

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 31 0:32 / /mnt/memory-again rw,relatime - cgroup cgroup rw,memory
"""

UNIFIED = """\
28 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
29 23 0:27 / /run/netns/a\\040b rw - nsfs nsfs rw
"""


@pytest.mark.parametrize(
    ("driver", "parent", "expected"),
    [
        ("cgroupfs", "/kubepods/burstable/pod123", "/kubepods/burstable/pod123"),
        ("cgroupfs", "kubepods/besteffort/", "/kubepods/besteffort"),
        ("cgroupfs", "//cri-shim", "/cri-shim"),
        ("cgroupfs", "", "/"),
        ("systemd", "kubepods-burstable-pod123.slice", "kubepods-burstable-pod123.slice"),
        ("systemd", "/test.slice", "test.slice"),
        ("systemd", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice", "kubepods-besteffort-podx.slice"),
        ("systemd", "", "-.slice"),
    ],
)
def test_parents_are_normalized_per_driver(driver: str, parent: str, expected: str) -> None:
    assert normalize_parent(driver, parent) == expected


@pytest.mark.parametrize(
    ("driver", "parent", "message"),
    [
        ("cgroupfs", "/a/../b", "'..'"),
        ("cgroupfs", "kubepods.slice", "systemd slice"),
        ("systemd", "/kubepods/burstable", "not a systemd slice"),
        ("systemd", "a--b.slice", "invalid systemd slice"),
        ("systemd", "-a.slice", "invalid systemd slice"),
        ("cgroupfs", "/a\x00b", "NUL"),
        ("weird", "/a", "unknown cgroup driver"),
    ],
)
def test_unusable_parents_are_refused(driver: str, parent: str, message: str) -> None:
    with pytest.raises(CgroupPathError, match=message):
        normalize_parent(driver, parent)


def test_container_paths_for_cgroupfs() -> None:
    path = container_cgroups_path("cgroupfs", "/kubepods/burstable/pod1", "abc")
    assert path == "/kubepods/burstable/pod1/abc" and relative_path("cgroupfs", path) == path


def test_container_paths_for_systemd_use_runc_slice_form() -> None:
    path = container_cgroups_path("systemd", "kubepods-burstable-pod1.slice", "abc")
    assert path == "kubepods-burstable-pod1.slice:cri-shim:abc"
    assert relative_path("systemd", path) == (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-shim-abc.scope"
    )
    assert relative_path("systemd", "test.slice:cri-shim:x") == "/test.slice/cri-shim-x.scope"
    assert parent_path("systemd", "-.slice") == "/"


def test_hybrid_hierarchies_are_every_v1_controller_plus_unified() -> None:
    h = hierarchy.detect(mountinfo.parse(HYBRID))
    assert h.roots == (
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
    )
    assert not h.unified
    assert h.dirs("/pod/x")[0] == "/sys/fs/cgroup/cpu/pod/x"


def test_pure_v2_has_the_one_unified_hierarchy() -> None:
    mounts = mountinfo.parse(UNIFIED)
    h = hierarchy.detect(mounts)
    assert h.roots == ("/sys/fs/cgroup",) and h.unified
    assert mountinfo.mounted_at(mounts, "nsfs") == {"/run/netns/a b": "nsfs"}


def test_create_list_and_prune_on_a_plain_tree(tmp_path: Path) -> None:
    roots = (str(tmp_path / "cpu"), str(tmp_path / "memory"))
    for r in roots:
        Path(r, "kept").mkdir(parents=True)
    h = hierarchy.Hierarchies(roots=roots, unified=False)
    planned = hierarchy.missing_dirs(h, "/parent/leaf")
    assert planned == [f"{roots[0]}/parent", f"{roots[0]}/parent/leaf", f"{roots[1]}/parent", f"{roots[1]}/parent/leaf"]
    hierarchy.create(h, "/parent/leaf")
    assert all(Path(d).is_dir() for d in planned)
    for d in h.dirs("/parent/leaf"):
        Path(d, "cgroup.procs").write_text("4242\n")
    assert hierarchy.processes(h, "/parent/leaf") == {4242}
    for d in h.dirs("/parent/leaf"):
        Path(d, "cgroup.procs").unlink()
    hierarchy.prune(planned + [f"{roots[0]}/absent"])
    assert not any(Path(d).exists() for d in planned) and Path(roots[0], "kept").is_dir()


def test_prune_keeps_busy_cgroups(tmp_path: Path) -> None:
    busy = tmp_path / "parent" / "other"
    busy.mkdir(parents=True)
    hierarchy.prune([str(tmp_path / "parent")])
    assert busy.is_dir()


PURE_V1 = """\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
"""


def test_own_cgroup_is_found_in_the_unified_hierarchy_first() -> None:
    membership = "4:memory:/elsewhere\n0::/system.slice/cri-shim.service\n"
    found = hierarchy.own_procs_file(mountinfo.parse(HYBRID), membership)
    assert found == "/sys/fs/cgroup/unified/system.slice/cri-shim.service/cgroup.procs"
    assert hierarchy.own_procs_file(mountinfo.parse(UNIFIED), "0::/\n") == "/sys/fs/cgroup/cgroup.procs"


def test_own_cgroup_on_pure_v1_is_a_hierarchy_whose_controllers_match() -> None:
    membership = "2:cpu,cpuacct:/pods/a\n1:name=systemd:/user.slice\n"
    assert hierarchy.own_procs_file(mountinfo.parse(PURE_V1), membership) == "/sys/fs/cgroup/cpu,cpuacct/pods/a/cgroup.procs"
    assert hierarchy.own_procs_file(mountinfo.parse(PURE_V1), "1:name=systemd:/user.slice\n") == (
        "/sys/fs/cgroup/systemd/user.slice/cgroup.procs"
    )


def test_own_cgroup_outside_a_mounted_subtree_is_not_found() -> None:
    nested = "28 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert hierarchy.own_procs_file(mountinfo.parse(nested), "0::/kubepods/pod1/c\n") == "/sys/fs/cgroup/c/cgroup.procs"
    assert hierarchy.own_procs_file(mountinfo.parse(nested), "0::/kubepods/pod1\n") == "/sys/fs/cgroup/cgroup.procs"
    assert hierarchy.own_procs_file(mountinfo.parse(nested), "0::/kubepods/pod10\n") is None
    assert hierarchy.own_procs_file(mountinfo.parse(HYBRID), "7:blkio:/x\n") is None
