"""Which cgroups a sandbox makes and prunes itself, per driver: under the systemd driver none,
since systemd owns its tree (runc has it make scopes, it removes them when empty)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.cgroups import hierarchy
from cri_shim.config import Config
from cri_shim.sandbox.record import Sandbox
from cri_shim.sandbox.resources import Resources

pytestmark = pytest.mark.unit


def setup(tmp_path: Path, driver: str, parent: str) -> tuple[Resources, Sandbox]:
    cfg = Config()
    cfg.runtime.cgroup_driver = driver
    cfg.paths.run_dir = str(tmp_path / "run")
    res = Resources(cfg, network=None, migrations=None)  # type: ignore[arg-type]  # neither is used here
    res._hierarchies = hierarchy.Hierarchies(roots=(str(tmp_path / "cgroup"),), unified=True)
    sb = Sandbox(id="s1", name="p/n/u/0", config=api.PodSandboxConfig(), runtime_handler="", created_at=0,
                 files_dir=str(tmp_path / "files"), cgroup_driver=driver, cgroup_parent=parent)
    return res, sb


def test_cgroupfs_makes_and_prunes_the_infra_cgroup_and_its_default_parent(tmp_path: Path) -> None:
    res, sb = setup(tmp_path, "cgroupfs", "/cri-shim")
    sb.infra_cgroup, sb.cgroup_dirs = res.plan_cgroups(sb, pod_pid=True)
    root = tmp_path / "cgroup"
    assert sb.infra_cgroup == "/cri-shim/s1"
    assert sb.cgroup_dirs == [str(root / "cri-shim"), str(root / "cri-shim/s1")]
    asyncio.run(res.make_infra_cgroup(sb))
    assert (root / "cri-shim/s1").is_dir()


def test_systemd_leaves_scopes_and_slices_to_systemd(tmp_path: Path) -> None:
    res, sb = setup(tmp_path, "systemd", "cri-shim.slice")
    sb.infra_cgroup, sb.cgroup_dirs = res.plan_cgroups(sb, pod_pid=True)
    assert sb.infra_cgroup == "cri-shim.slice:cri-shim:s1"  # runc asks systemd for cri-shim-s1.scope
    assert sb.cgroup_dirs == []
    assert sb.pod_cgroup() == "/cri.slice/cri-shim.slice"  # where stats read the pod's counters
    asyncio.run(res.make_infra_cgroup(sb))
    assert not (tmp_path / "cgroup").exists()
