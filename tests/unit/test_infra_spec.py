"""The infra container's spec: everything that confines the pod's PID 1, checked field by field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.config import Config
from cri_shim.errors import Internal
from cri_shim.oci.context import HostInfo
from cri_shim.sandbox import infra
from cri_shim.sandbox.record import Sandbox

pytestmark = pytest.mark.unit


def sandbox(**sc_fields: int) -> Sandbox:
    config = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="p", namespace="n", uid="u"))
    for field, value in sc_fields.items():
        getattr(config.linux.security_context, field).value = value
    return Sandbox(
        id="a" * 64, name="p/n/u/0", config=config, runtime_handler="", created_at=1, files_dir="/x",
        cgroup_driver="cgroupfs", cgroup_parent="/cri-shim", infra_cgroup="/cri-shim/" + "a" * 64,
        pins={"net": "/run/ns/net/a", "ipc": "/run/ns/ipc/a", "uts": "/run/ns/uts/a"},
    )


def test_the_spec_grants_nothing() -> None:
    spec = infra.spec(sandbox(), "/usr/bin/catatonit", Path("/run/infra/rootfs"), HostInfo(oom_score_adj_min=0))
    process = spec["process"]
    assert process["args"] == ["/catatonit", "-P"]
    assert all(v == [] for v in process["capabilities"].values()) and len(process["capabilities"]) == 5
    assert process["noNewPrivileges"] is True
    assert process["user"] == {"uid": infra.DEFAULT_ID, "gid": infra.DEFAULT_ID}
    assert process["env"] == [infra.marker("a" * 64)]
    assert process["oomScoreAdj"] == 0  # -998 clamped to what the host allows
    assert spec["root"] == {"path": "/run/infra/rootfs", "readonly": True}
    binds = [m for m in spec["mounts"] if m["type"] == "bind"]
    assert binds == [{"destination": "/catatonit", "type": "bind", "source": "/usr/bin/catatonit",
                      "options": ["bind", "ro", "nosuid", "nodev"]}]
    linux = spec["linux"]
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO" and linux["seccomp"]["syscalls"]
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert linux["cgroupsPath"] == "/cri-shim/" + "a" * 64
    assert {"type": "pid"} in linux["namespaces"] and {"type": "mount"} in linux["namespaces"]
    assert {"type": "network", "path": "/run/ns/net/a"} in linux["namespaces"]
    assert {"type": "cgroup"} not in linux["namespaces"]
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert "apparmorProfile" not in process  # no AppArmor on the host


def test_the_default_apparmor_profile_where_apparmor_is_on() -> None:
    spec = infra.spec(sandbox(), "/bin/c", Path("/r"), HostInfo(apparmor_enabled=True))
    assert spec["process"]["apparmorProfile"] == "cri-shim-default"


def test_the_pods_ids_and_a_cgroup_namespace_on_v2() -> None:
    spec = infra.spec(sandbox(run_as_user=1000, run_as_group=0), "/bin/c", Path("/r"), HostInfo(cgroup_v2=True))
    assert spec["process"]["user"] == {"uid": 1000, "gid": 0}
    assert {"type": "cgroup"} in spec["linux"]["namespaces"]
    assert spec["process"]["oomScoreAdj"] == infra.OOM_SCORE_ADJ


def test_the_binary_must_be_static(tmp_path: Path) -> None:
    catatonit = shutil.which("catatonit")
    if catatonit is None:
        pytest.skip("catatonit is not installed")
    assert infra.static_binary("catatonit") == str(Path(catatonit).resolve())
    with pytest.raises(Internal, match="dynamically linked"):
        infra.static_binary(str(Path(shutil.which("ls") or "/bin/ls").resolve()))
    with pytest.raises(Internal, match="not found"):
        infra.static_binary(str(tmp_path / "absent"))


def test_the_root_holds_mount_points_only(tmp_path: Path) -> None:
    infra.make_root(tmp_path / "root", "/usr/bin/catatonit")
    infra.make_root(tmp_path / "root", "/usr/bin/catatonit")
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["catatonit", "dev", "proc"]
    assert (tmp_path / "root" / "catatonit").stat().st_size == 0


def test_the_infra_process_joins_the_pods_user_namespace() -> None:
    sb = sandbox()
    userns = sb.config.linux.security_context.namespace_options.userns_options
    userns.mode = api.POD
    userns.uids.add(container_id=0, host_id=65536, length=65536)
    userns.gids.add(container_id=0, host_id=65536, length=65536)
    sb.pins["user"] = "/run/ns/user/a"
    linux = infra.spec(sb, "/bin/c", Path("/r"), HostInfo())["linux"]
    assert {"type": "user", "path": "/run/ns/user/a"} in linux["namespaces"]
    assert linux["uidMappings"] == linux["gidMappings"] == [{"containerID": 0, "hostID": 65536, "size": 65536}]
    assert "uidMappings" not in infra.spec(sandbox(), "/bin/c", Path("/r"), HostInfo())["linux"]


def test_only_sandbox_ids_in_a_runtimes_state_root_are_infra_containers(tmp_path: Path) -> None:
    cfg = Config()
    cfg.paths.run_dir = str(tmp_path)
    containers = infra.InfraContainers(cfg)
    root = tmp_path / "infra" / "state" / "crun"
    sandbox_id = "ab" * 32
    for name in (sandbox_id, ".cache", "AB" * 32, "ab" * 31, "not-a-sandbox"):
        (root / name).mkdir(parents=True)
    assert containers.known() == {sandbox_id: "crun"}
