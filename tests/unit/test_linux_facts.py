"""Host facts read through cri_shim.linux and cri_shim.cgroups: the kernel's, this process's and
another process's, each with its answer when the file is absent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cri_shim.cgroups import container_cgroups_path, hierarchy
from cri_shim.linux import kernel, mountinfo, proc

pytestmark = pytest.mark.unit


def test_last_cap_is_the_kernels_or_the_default_without_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = tmp_path / "cap_last_cap"
    cap.write_text("37\n")
    monkeypatch.setattr(kernel, "CAP_LAST_CAP", cap)
    assert kernel.last_cap() == 37
    cap.unlink()
    assert kernel.last_cap() == kernel.DEFAULT_LAST_CAP


def test_module_parameters_and_apparmor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "MODULES", tmp_path)
    assert kernel.module_parameter("overlay", "index") is None and not kernel.apparmor_enabled()
    (tmp_path / "apparmor" / "parameters").mkdir(parents=True)
    (tmp_path / "apparmor" / "parameters" / "enabled").write_text("Y\n")
    assert kernel.module_parameter("apparmor", "enabled") == "Y" and kernel.apparmor_enabled()
    profiles = tmp_path / "profiles"
    monkeypatch.setattr(kernel, "APPARMOR_PROFILES", profiles)
    assert kernel.apparmor_profiles() == set()
    profiles.write_text("cri-shim-default (enforce)\nwith space (complain)\n")
    assert kernel.apparmor_profiles() == {"cri-shim-default", "with space"}


def test_own_status_oom_score_adj_and_working_directory() -> None:
    assert proc.status_mask("CapBnd") > 0 and proc.status_mask("NoSuchField") == 0
    assert proc.oom_score_adj() == int(Path("/proc/self/oom_score_adj").read_text())
    here = os.stat(os.getcwd())
    assert proc.cwd_identity(os.getpid()) == (here.st_dev, here.st_ino)
    assert os.stat(proc.namespace_path(os.getpid(), "net")).st_ino == os.stat("/proc/thread-self/ns/net").st_ino


def test_a_gone_process_has_no_cgroups_no_oom_score_adj_and_no_working_directory() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    assert hierarchy.paths_of(child.pid) == [] and proc.oom_score_adj(child.pid) is None
    with pytest.raises(OSError):
        proc.cwd_identity(child.pid)
    assert hierarchy.paths_of(os.getpid())  # this process is in some cgroup


def test_mountinfo_keeps_the_optional_fields() -> None:
    (shared, private) = mountinfo.parse(
        "36 35 98:0 /mnt /srv rw,noatime shared:1 master:2 - ext3 /dev/root rw,errors=continue\n"
        "37 35 98:0 / /data rw - ext4 /dev/sdb rw\n"
    )
    assert shared.optional == ("shared:1", "master:2") and shared.mount_point == "/srv"
    assert private.optional == ()


def test_a_container_of_a_pod_with_no_parent_gets_the_drivers_default() -> None:
    assert container_cgroups_path("cgroupfs", "", "c") == "/c"
    assert container_cgroups_path("systemd", "", "c") == "system.slice:cri-shim:c"
