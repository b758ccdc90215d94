"""The operator's knobs for every container: a default pids limit, the RuntimeDefault seccomp
profile for containers that name none, and conmon's log size cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cri_shim import config
from cri_shim.api import api_pb2 as api
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.oci.context import HostInfo, SandboxInfo
from cri_shim.oci.spec import Defaults, build_spec
from cri_shim.runtime.conmon import ConmonMonitor
from cri_shim.runtime.monitor import MonitorSpec
from cri_shim.runtime.runc import Runc
from tests.support.etc import minimal_rootfs

pytestmark = pytest.mark.unit

HOST = HostInfo(cgroup_v2=True, swap_accounting=True, oom_score_adj_min=-5, last_cap=40, bounding_caps=tuple(range(41)))
SANDBOX = SandboxInfo(id="sb", hostname="pod", netns_path="/run/ns/net", ipc_ns_path="/run/ns/ipc", uts_ns_path="/run/ns/uts",
                      pid_ns_path="/proc/7/ns/pid", cgroup_parent="/kubepods/pod1")
SOCKETS = Path("/run/cri-shim/s")  # attach sockets need a short directory (sun_path)


def spec(tmp_path: Path, cfg: api.ContainerConfig, defaults: Defaults, pod: api.PodSandboxConfig | None = None) -> dict[str, Any]:
    rootfs = tmp_path / "rootfs"
    if not rootfs.exists():
        minimal_rootfs(rootfs, "root:x:0:0::/root:/bin/sh\n", "root:x:0:\n")
    cfg.command.append("/bin/true")
    return build_spec("c1", cfg, pod or api.PodSandboxConfig(), SANDBOX, ImageConfig(), rootfs, HOST, defaults=defaults).spec


def test_default_pids_limit_unless_the_container_sets_pids_max(tmp_path: Path) -> None:
    assert "pids" not in spec(tmp_path, api.ContainerConfig(), Defaults())["linux"]["resources"]
    assert "pids" not in spec(tmp_path, api.ContainerConfig(), Defaults(pids_limit=0))["linux"]["resources"]
    assert spec(tmp_path, api.ContainerConfig(), Defaults(pids_limit=512))["linux"]["resources"]["pids"] == {"limit": 512}
    own = api.ContainerConfig()
    own.linux.resources.unified["pids.max"] = "64"
    res = spec(tmp_path, own, Defaults(pids_limit=512))["linux"]["resources"]
    assert "pids" not in res and res["unified"] == {"pids.max": "64"}


def test_runtime_default_seccomp_for_containers_that_name_no_profile(tmp_path: Path) -> None:
    on = Defaults(seccomp_when_unset=True)
    assert "seccomp" not in spec(tmp_path, api.ContainerConfig(), Defaults())["linux"]
    assert spec(tmp_path, api.ContainerConfig(), on)["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    unconfined = api.ContainerConfig()
    unconfined.linux.security_context.seccomp.profile_type = api.SecurityProfile.Unconfined
    assert "seccomp" not in spec(tmp_path, unconfined, on)["linux"]
    by_path = api.ContainerConfig()
    by_path.linux.security_context.seccomp_profile_path = "unconfined"
    assert "seccomp" not in spec(tmp_path, by_path, on)["linux"]
    privileged = api.ContainerConfig()
    privileged.linux.security_context.privileged = True
    pod = api.PodSandboxConfig()
    pod.linux.security_context.privileged = True
    assert "seccomp" not in spec(tmp_path, privileged, on, pod)["linux"]


def test_conmon_writes_its_records_into_the_bundle_and_the_daemon_caps_the_log(tmp_path: Path) -> None:
    monitor_spec = MonitorSpec(container_id="c" * 64, name="n", bundle=tmp_path, log_dir=0, log_name="0.log",
                               log_path="/logs/0.log", runtime=Runc("/usr/bin/runc", tmp_path / "root"))
    capped = ConmonMonitor("/usr/bin/conmon", tmp_path / "exits", SOCKETS, log_size_max=65536)
    args = capped.args(monitor_spec)
    assert "--log-size-max" not in args and f"k8s-file:{tmp_path}/log.fifo" in args and "--no-sync-log" in args
    assert capped.logs.size_max == 65536


def test_knob_defaults_are_documented_and_bad_values_refused(tmp_path: Path) -> None:
    runtime = config.load(None).runtime
    assert (runtime.default_pids_limit, runtime.log_size_max_bytes, runtime.seccomp_default_when_unset) == (-1, -1, False)
    text = config.render_defaults()
    for key in ("default_pids_limit = -1", "log_size_max_bytes = -1", "seccomp_default_when_unset = false"):
        assert key in text
    path = tmp_path / "c.toml"
    for body, message in (("default_pids_limit = -2", "default_pids_limit"), ("log_size_max_bytes = 100", "8192"),
                          ("log_size_max_bytes = 0", "8192"), ("max_container_log_line_size = 0", "1048576"),
                          ("max_container_log_line_size = 1048577", "1048576")):
        path.write_text(f"[runtime]\n{body}\n")
        with pytest.raises(config.ConfigError, match=message):
            config.load(path)
    path.write_text("[runtime]\ndefault_pids_limit = 0\nlog_size_max_bytes = 8192\nmax_container_log_line_size = -1\n")
    loaded = config.load(path).runtime
    assert (loaded.default_pids_limit, loaded.log_size_max_bytes, loaded.max_container_log_line_size) == (0, 8192, -1)
    assert runtime.max_container_log_line_size == 16384 and "max_container_log_line_size = 16384" in text
