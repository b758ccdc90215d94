"""Spec rules for namespaces, mounts, resources, capabilities, seccomp and the other guards."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import FailedPrecondition, InvalidArgument
from cri_shim.idmappings import IdMappings, Mapping
from cri_shim.oci import capabilities, devices, mounts, namespaces, resources, seccomp, security, signals
from cri_shim.oci.context import HostInfo, SandboxInfo
from cri_shim.image import imageconfig
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.oci.spec import build_spec
from tests.support.etc import minimal_rootfs

pytestmark = pytest.mark.unit

HOST = HostInfo(cgroup_v2=False, swap_accounting=True, oom_score_adj_min=-5, last_cap=40, bounding_caps=tuple(range(41)))
SANDBOX = SandboxInfo(id="sb", hostname="pod", netns_path="/run/ns/net", ipc_ns_path="/run/ns/ipc", uts_ns_path="/run/ns/uts",
                      pid_ns_path="/proc/7/ns/pid", cgroup_parent="/kubepods/pod1")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return minimal_rootfs(tmp_path / "rootfs", "root:x:0:0::/root:/bin/sh\n", "root:x:0:\n")


def build(rootfs: Path, cfg: api.ContainerConfig, sandbox_config: api.PodSandboxConfig | None = None,
          sandbox: SandboxInfo = SANDBOX, image: ImageConfig | None = None, host: HostInfo = HOST, **kw: Any) -> dict[str, Any]:
    if not cfg.command:
        cfg.command.append("/bin/true")
    return build_spec("c1", cfg, sandbox_config or api.PodSandboxConfig(), sandbox, image or ImageConfig(), rootfs, host, **kw).spec


def ns(spec: dict[str, Any]) -> dict[str, str | None]:
    return {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}


def test_pod_namespaces_and_hostname(rootfs: Path) -> None:
    spec = build(rootfs, api.ContainerConfig())
    assert ns(spec) == {"mount": None, "network": "/run/ns/net", "uts": "/run/ns/uts", "ipc": "/run/ns/ipc", "pid": "/proc/7/ns/pid"}
    assert spec["hostname"] == "pod"
    assert spec["linux"]["cgroupsPath"] == "/kubepods/pod1/c1"


def test_host_and_container_namespaces(rootfs: Path) -> None:
    cfg = api.ContainerConfig()
    o = cfg.linux.security_context.namespace_options
    o.network, o.ipc, o.pid = api.NODE, api.NODE, api.NODE
    spec = build(rootfs, cfg)
    assert ns(spec) == {"mount": None} and "hostname" not in spec
    o.network, o.ipc, o.pid = api.CONTAINER, api.CONTAINER, api.CONTAINER
    assert ns(build(rootfs, cfg)) == {"mount": None, "network": None, "uts": None, "ipc": None, "pid": None}


def test_pod_mode_in_a_host_namespace_pod_means_the_hosts(rootfs: Path) -> None:
    """critest's host-network pods create containers with no namespace options: they must not get a fresh netns."""
    host_pod = SandboxInfo(id="sb", hostname="node", host_network=True, host_ipc=True, host_pid=True, cgroup_parent="/p")
    spec = build(rootfs, api.ContainerConfig(), sandbox=host_pod)
    assert ns(spec) == {"mount": None} and "hostname" not in spec
    assert [m["source"] for m in spec["mounts"] if m["destination"] == "/dev/shm"] == ["/dev/shm"]
    cfg = api.ContainerConfig()
    cfg.linux.security_context.namespace_options.network = api.CONTAINER
    assert ns(build(rootfs, cfg, sandbox=host_pod)) == {"mount": None, "network": None, "uts": None}


def test_target_pid_namespace(rootfs: Path) -> None:
    cfg = api.ContainerConfig()
    cfg.linux.security_context.namespace_options.pid = api.TARGET
    cfg.linux.security_context.namespace_options.target_id = "other"
    assert ns(build(rootfs, cfg, target_pid_ns="/proc/9/ns/pid"))["pid"] == "/proc/9/ns/pid"
    with pytest.raises(FailedPrecondition):
        build(rootfs, cfg)


def test_pod_pid_in_a_pod_of_per_container_pid_namespaces_is_a_fresh_one(rootfs: Path) -> None:
    """crictl's usual files: a pod with pid CONTAINER, a container without namespace options (pid POD)."""
    assert ns(build(rootfs, api.ContainerConfig(), sandbox=SandboxInfo(id="sb")))["pid"] is None


def test_pod_pid_of_a_pod_that_lost_its_pid_namespace_fails(rootfs: Path) -> None:
    with pytest.raises(FailedPrecondition, match="PID namespace of sandbox sb is gone"):
        build(rootfs, api.ContainerConfig(), sandbox=SandboxInfo(id="sb", pod_pid=True))


def test_cgroup_namespace_on_v2_only_unprivileged() -> None:
    opts = api.NamespaceOption(pid=api.CONTAINER)
    assert {"type": "cgroup"} in namespaces.build(opts, SANDBOX, None, cgroup_v2=True, privileged=False)
    assert {"type": "cgroup"} not in namespaces.build(opts, SANDBOX, None, cgroup_v2=True, privileged=True)


def test_systemd_cgroups_path() -> None:
    assert SandboxInfo(id="s", cgroup_parent="kubepods-pod1.slice", systemd_cgroup=True).cgroups_path("c") == "kubepods-pod1.slice:cri-shim:c"
    assert SandboxInfo(id="s").cgroups_path("c") == "/c"


def find_mount(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    found = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, found
    return found[0]


def test_cri_mounts(rootfs: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    cfg = api.ContainerConfig()
    cfg.mounts.add(container_path="/data/", host_path=str(tmp_path / "link"), readonly=True)
    cfg.mounts.add(container_path="/new", host_path=str(tmp_path / "a/b"))
    cfg.mounts.add(container_path="/data/sub", host_path=str(real))
    spec = build(rootfs, cfg)
    assert find_mount(spec, "/data") == {"destination": "/data", "type": "bind", "source": str(real), "options": ["rbind", "rprivate", "ro"]}
    assert find_mount(spec, "/new")["options"] == ["rbind", "rprivate", "rw"] and (tmp_path / "a/b").is_dir()
    order = [m["destination"] for m in spec["mounts"]]
    assert order.index("/data") < order.index("/data/sub")
    assert "rootfsPropagation" not in spec["linux"]


def test_propagation_sets_rootfs_propagation(monkeypatch: pytest.MonkeyPatch, rootfs: Path, tmp_path: Path) -> None:
    monkeypatch.setattr(mounts, "host_propagation", lambda path: {"shared"})
    pod = api.PodSandboxConfig()
    pod.linux.security_context.privileged = True  # bidirectional propagation is for privileged containers
    for prop, option in ((api.PROPAGATION_HOST_TO_CONTAINER, "rslave"), (api.PROPAGATION_BIDIRECTIONAL, "rshared")):
        cfg = api.ContainerConfig()
        cfg.linux.security_context.privileged = True
        cfg.mounts.add(container_path="/m", host_path=str(tmp_path), propagation=prop)
        spec = build(rootfs, cfg, pod)
        assert find_mount(spec, "/m")["options"][1] == option and spec["linux"]["rootfsPropagation"] == option
    monkeypatch.setattr(mounts, "host_propagation", lambda path: {"master"})
    cfg = api.ContainerConfig()
    cfg.linux.security_context.privileged = True
    cfg.mounts.add(container_path="/m", host_path=str(tmp_path), propagation=api.PROPAGATION_BIDIRECTIONAL)
    with pytest.raises(FailedPrecondition):
        build(rootfs, cfg, pod)


@pytest.mark.parametrize("kw", [{"readonly": False}, {"readonly": True, "propagation": api.PROPAGATION_HOST_TO_CONTAINER},
                                {"readonly": True, "propagation": api.PROPAGATION_BIDIRECTIONAL}])
def test_recursive_read_only_validation(rootfs: Path, tmp_path: Path, kw: dict[str, Any]) -> None:
    cfg = api.ContainerConfig()
    cfg.mounts.add(container_path="/m", host_path=str(tmp_path / "never"), recursive_read_only=True, **kw)
    with pytest.raises(InvalidArgument):
        build(rootfs, cfg)
    assert not (tmp_path / "never").exists()


def test_recursive_read_only_option(rootfs: Path, tmp_path: Path) -> None:
    cfg = api.ContainerConfig()
    cfg.mounts.add(container_path="/m", host_path=str(tmp_path), readonly=True, recursive_read_only=True)
    assert find_mount(build(rootfs, cfg), "/m")["options"] == ["rbind", "rprivate", "ro", "rro"]


def test_pod_files_and_shm(rootfs: Path, tmp_path: Path) -> None:
    sandbox = SandboxInfo(id="sb", pid_ns_path="/p", hosts_path="/pod/hosts", hostname_path="/pod/hostname",
                          resolv_conf_path="/pod/resolv", shm_path="/pod/shm")
    cfg = api.ContainerConfig()
    cfg.linux.security_context.readonly_rootfs = True
    cfg.mounts.add(container_path="/etc/hostname", host_path=str(tmp_path))
    spec = build(rootfs, cfg, sandbox=sandbox)
    assert find_mount(spec, "/etc/hosts") == {"destination": "/etc/hosts", "type": "bind", "source": "/pod/hosts", "options": ["rbind", "rprivate", "ro"]}
    assert find_mount(spec, "/etc/resolv.conf")["source"] == "/pod/resolv"
    assert find_mount(spec, "/etc/hostname")["source"] == str(tmp_path)
    assert find_mount(spec, "/dev/shm") == {"destination": "/dev/shm", "type": "bind", "source": "/pod/shm", "options": ["rbind", "rprivate", "rw"]}
    assert spec["root"] == {"path": str(rootfs), "readonly": True}
    cfg.linux.security_context.namespace_options.ipc = api.NODE
    assert find_mount(build(rootfs, cfg, sandbox=sandbox), "/dev/shm")["source"] == "/dev/shm"


def test_default_mounts_and_privileged_sysfs(rootfs: Path) -> None:
    spec = build(rootfs, api.ContainerConfig())
    assert {m["destination"] for m in spec["mounts"]} >= {"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm"}
    assert "ro" in find_mount(spec, "/sys")["options"]
    assert "ro" not in mounts.default_mounts(privileged=True, cgroup_v2=False)[4]["options"]


def test_image_volumes_are_made_in_the_rootfs(rootfs: Path) -> None:
    build(rootfs, api.ContainerConfig(), image=ImageConfig(volumes=["/var/lib/data"]))
    assert (rootfs / "var/lib/data").is_dir()


def test_resources(rootfs: Path) -> None:
    cfg = api.ContainerConfig()
    r = cfg.linux.resources
    r.cpu_shares, r.cpu_quota, r.cpu_period, r.cpuset_cpus, r.cpuset_mems = 512, 50000, 100000, "0-1", "0"
    r.memory_limit_in_bytes, r.oom_score_adj = 1 << 26, -997
    r.hugepage_limits.add(page_size="2MB", limit=1 << 21)
    spec = build(rootfs, cfg)
    res = spec["linux"]["resources"]
    assert res["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    assert res["memory"] == {"limit": 1 << 26, "swap": 1 << 26}
    assert res["hugepageLimits"] == [{"pageSize": "2MB", "limit": 1 << 21}]
    assert spec["process"]["oomScoreAdj"] == -5
    r.memory_swap_limit_in_bytes = 1 << 27
    assert resources.build(r, True, False)["memory"]["swap"] == 1 << 27
    assert "swap" not in resources.build(r, False, False)["memory"]
    r.memory_swap_limit_in_bytes = 1 << 20
    with pytest.raises(InvalidArgument):
        resources.build(r, True, False)
    with pytest.raises(InvalidArgument):
        resources.build(api.LinuxContainerResources(unified={"pids.max": "10"}), True, False)
    assert resources.build(api.LinuxContainerResources(unified={"pids.max": "10"}), True, True) == {"unified": {"pids.max": "10"}}
    assert resources.clamp_oom_score_adj(5000, 0) == 1000


def test_capabilities() -> None:
    bnd = tuple(n for n in range(41) if n != 24)
    assert capabilities.compute(api.Capability(), False, 40, bnd) == capabilities.DEFAULT
    caps = capabilities.compute(api.Capability(add_capabilities=["net_admin", "CAP_SYS_TIME"], drop_capabilities=["KILL"]), False, 40, bnd)
    assert "CAP_NET_ADMIN" in caps and "CAP_SYS_TIME" in caps and "CAP_KILL" not in caps
    everything = capabilities.compute(api.Capability(add_capabilities=["ALL"]), False, 40, bnd)
    assert len(everything) == 40 and "CAP_SYS_RESOURCE" not in everything
    assert capabilities.compute(api.Capability(drop_capabilities=["ALL"], add_capabilities=["CHOWN"]), False, 40, bnd) == ["CAP_CHOWN"]
    assert capabilities.compute(api.Capability(add_capabilities=["ALL"], drop_capabilities=["ALL"]), False, 40, bnd) == []
    assert capabilities.compute(api.Capability(drop_capabilities=["ALL"]), True, 40, bnd) == everything
    with pytest.raises(InvalidArgument):
        capabilities.compute(api.Capability(add_capabilities=["FLY"]), False, 40, bnd)


def test_process_capability_sets(rootfs: Path) -> None:
    caps = build(rootfs, api.ContainerConfig())["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == capabilities.DEFAULT
    assert caps["inheritable"] == [] and caps["ambient"] == []


def sec(**kw: Any) -> api.LinuxContainerSecurityContext:
    ctx = api.LinuxContainerSecurityContext(**{k: v for k, v in kw.items() if k != "profile"})
    if "profile" in kw:
        ctx.seccomp.CopyFrom(kw["profile"])
    return ctx


def test_seccomp_choice() -> None:
    assert seccomp.choose(sec()) == ("unconfined", "")
    assert seccomp.choose(sec(profile=api.SecurityProfile())) == ("runtime/default", "")
    assert seccomp.choose(sec(profile=api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined))) == ("unconfined", "")
    assert seccomp.choose(sec(profile=api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="/p.json"))) == ("localhost", "/p.json")
    assert seccomp.choose(sec(seccomp_profile_path="docker/default")) == ("runtime/default", "")
    assert seccomp.choose(sec(seccomp_profile_path="localhost//x.json")) == ("localhost", "/x.json")
    # The field wins over the deprecated string.
    assert seccomp.choose(sec(seccomp_profile_path="runtime/default", profile=api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined)))[0] == "unconfined"
    for bad in ("localhost/relative.json", "nonsense"):
        with pytest.raises(InvalidArgument):
            seccomp.choose(sec(seccomp_profile_path=bad))


def names_of(profile: dict[str, Any]) -> set[str]:
    return {n for rule in profile["syscalls"] for n in rule["names"] if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule}


def test_runtime_default_profile_depends_on_capabilities() -> None:
    plain = seccomp.runtime_default(capabilities.DEFAULT, arch="x86_64")
    assert plain["defaultAction"] == "SCMP_ACT_ERRNO" and plain["architectures"][0] == "SCMP_ARCH_X86_64"
    allowed = names_of(plain)
    assert {"read", "write", "execve", "chroot", "arch_prctl"} <= allowed
    assert not {"mount", "unshare", "sethostname", "reboot", "bpf"} & allowed
    assert "ptrace" in allowed  # allowed on kernels from 4.8, which fixed the seccomp bypass through it
    clone_rules = [r for r in plain["syscalls"] if r["names"] == ["clone"]]
    assert clone_rules and clone_rules[0]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    admin = seccomp.runtime_default([*capabilities.DEFAULT, "CAP_SYS_ADMIN"], arch="x86_64")
    assert {"mount", "unshare", "sethostname", "clone"} <= names_of(admin)
    assert not [r for r in admin["syscalls"] if r["names"] == ["clone3"]]
    assert not [r for r in seccomp.runtime_default(capabilities.DEFAULT, arch="aarch64")["syscalls"] if "arch_prctl" in r["names"]]


def test_seccomp_in_spec(rootfs: Path, tmp_path: Path) -> None:
    cfg = api.ContainerConfig()
    assert "seccomp" not in build(rootfs, cfg)["linux"]
    cfg.linux.security_context.seccomp.profile_type = api.SecurityProfile.RuntimeDefault
    assert build(rootfs, cfg)["linux"]["seccomp"]["defaultErrnoRet"] == 1
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]}
    (tmp_path / "p.json").write_text(json.dumps(profile))
    cfg.linux.security_context.seccomp.profile_type = api.SecurityProfile.Localhost
    cfg.linux.security_context.seccomp.localhost_ref = str(tmp_path / "p.json")
    assert build(rootfs, cfg)["linux"]["seccomp"] == profile
    cfg.linux.security_context.seccomp.localhost_ref = str(tmp_path / "missing.json")
    with pytest.raises(InvalidArgument):
        build(rootfs, cfg)


def privileged(cfg: api.ContainerConfig) -> tuple[api.ContainerConfig, api.PodSandboxConfig]:
    cfg.linux.security_context.privileged = True
    cfg.linux.security_context.seccomp.profile_type = api.SecurityProfile.RuntimeDefault
    sc = api.PodSandboxConfig()
    sc.linux.security_context.privileged = True
    return cfg, sc


def test_privileged(rootfs: Path) -> None:
    cfg, sc = privileged(api.ContainerConfig())
    spec = build(rootfs, cfg, sandbox_config=sc)
    assert spec["process"]["capabilities"]["bounding"] == capabilities.known(40)
    assert spec["linux"]["maskedPaths"] == [] and spec["linux"]["readonlyPaths"] == []
    assert "seccomp" not in spec["linux"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in spec["linux"]["devices"])
    with pytest.raises(InvalidArgument, match="privileged pod"):
        build(rootfs, cfg)


def test_masked_and_readonly_paths(rootfs: Path) -> None:
    spec = build(rootfs, api.ContainerConfig())  # procMount Unmasked: kubelet sends empty lists
    assert (spec["linux"]["maskedPaths"], spec["linux"]["readonlyPaths"]) == ([], [])
    cfg = api.ContainerConfig()
    cfg.linux.security_context.masked_paths.append("/secret")
    cfg.linux.security_context.readonly_paths.append("/tmp")
    spec = build(rootfs, cfg)
    assert (spec["linux"]["maskedPaths"], spec["linux"]["readonlyPaths"]) == (["/secret"], ["/tmp"])


def test_no_new_privs_and_apparmor(rootfs: Path) -> None:
    cfg = api.ContainerConfig()
    cfg.linux.security_context.no_new_privs = True
    assert build(rootfs, cfg)["process"]["noNewPrivileges"] is True
    cfg.linux.security_context.apparmor.profile_type = api.SecurityProfile.Unconfined
    assert "apparmorProfile" not in build(rootfs, cfg)["process"]
    cfg.linux.security_context.apparmor.profile_type = api.SecurityProfile.Localhost
    cfg.linux.security_context.apparmor.localhost_ref = "localhost/deny-write"
    with pytest.raises(InvalidArgument, match="apparmor"):
        build(rootfs, cfg)
    old = api.ContainerConfig()
    old.linux.security_context.apparmor_profile = "runtime/default"
    with pytest.raises(InvalidArgument, match="apparmor"):
        build(rootfs, old)


def test_sysctls() -> None:
    assert security.sysctls({"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100"}, False, False) == {
        "net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100"}
    for key, host_net, host_ipc in (("net.ipv4.ip_forward", True, False), ("kernel.msgmax", False, True), ("vm.swappiness", False, False)):
        with pytest.raises(InvalidArgument):
            security.sysctls({key: "1"}, host_net, host_ipc)


def test_devices(tmp_path: Path) -> None:
    null = tmp_path / "null"  # /dev/null's numbers, root's: the host's may be another's in a test run
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    nodes, rules = devices.from_cri([api.Device(container_path="/dev/x", host_path=str(null), permissions="rw")])
    assert nodes[0] == {"path": "/dev/x", "type": "c", "major": 1, "minor": 3, "fileMode": nodes[0]["fileMode"], "uid": 0, "gid": 0}
    assert rules == [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]
    (tmp_path / "file").write_text("")
    for bad in (api.Device(container_path="/dev/x", host_path="/nonexistent"), api.Device(container_path="/dev/x", host_path=str(tmp_path / "file")),
                api.Device(container_path="/dev/x", host_path="/dev/null", permissions="rwx"), api.Device(container_path="x", host_path="/dev/null")):
        with pytest.raises(InvalidArgument):
            devices.from_cri([bad])
    assert devices.default_rules()[0] == {"allow": False, "access": "rwm"}


def test_annotations_env_and_stop_signal(rootfs: Path) -> None:
    cfg = api.ContainerConfig(metadata=api.ContainerMetadata(name="web"), annotations={"a": "1"}, command=["/bin/true"])
    sc = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="p", namespace="n", uid="u"))
    built = build_spec("c1", cfg, sc, SANDBOX, ImageConfig(stop_signal="SIGQUIT"), rootfs, HOST, image_name="busybox")
    ann = built.spec["annotations"]
    assert ann["a"] == "1" and ann["io.kubernetes.cri.sandbox-id"] == "sb" and ann["io.kubernetes.cri.container-name"] == "web"
    assert ann["io.kubernetes.cri.image-name"] == "busybox" and ann["io.kubernetes.cri.sandbox-namespace"] == "n"
    assert built.stop_signal == signal.SIGQUIT
    cfg.stop_signal = api.SIGUSR2
    assert build_spec("c1", cfg, sc, SANDBOX, ImageConfig(stop_signal="SIGQUIT"), rootfs, HOST).stop_signal == signal.SIGUSR2
    assert build_spec("c1", cfg, sc, SANDBOX, ImageConfig(), rootfs, HOST).user.uid == 0


def test_signal_parsing() -> None:
    assert [signals.parse(s) for s in ("SIGTERM", "term", "9", "SIGRTMIN+3", "SIGRTMINPLUS3", "SIGRTMAXMINUS1")] == [
        15, 15, 9, signal.SIGRTMIN + 3, signal.SIGRTMIN + 3, signal.SIGRTMAX - 1]
    for bad in ("SIGNOPE", "0", "99"):
        with pytest.raises(InvalidArgument):
            signals.parse(bad)
    assert signals.stop_signal(api.ContainerConfig(), "") == signal.SIGTERM


def test_image_config_parsed_as_specs_use_it() -> None:
    body = json.dumps({"config": {"Entrypoint": ["/e"], "Cmd": None, "Env": ["A=1"], "User": "u:g", "StopSignal": "SIGINT",
                                  "Volumes": {"/v2": {}, "/v1": {}}, "WorkingDir": "/w"}}).encode()
    image = imageconfig.parse(body)
    assert (image.entrypoint, image.cmd, image.env, image.working_dir, image.user, image.stop_signal, image.volumes) == (
        ["/e"], [], ["A=1"], "/w", "u:g", "SIGINT", ["/v1", "/v2"])


def test_host_info_detects_this_host() -> None:
    host = HostInfo.detect()
    assert host.last_cap >= 36 and host.oom_score_adj_min <= int(Path(f"/proc/{os.getpid()}/oom_score_adj").read_text())


USERNS_IDS = IdMappings((Mapping(0, 65536, 65536),), (Mapping(0, 65536, 65536),))
USERNS_SANDBOX = dataclasses.replace(SANDBOX, userns_path="/run/ns/user", id_mappings=USERNS_IDS, hosts_path="/sb/hosts",
                                     shm_path="/sb/shm")


def test_a_user_namespace_pod_is_joined_first_with_its_mappings_and_idmapped_pod_files(rootfs: Path) -> None:
    spec = build(rootfs, api.ContainerConfig(), sandbox=USERNS_SANDBOX)
    assert spec["linux"]["namespaces"][0] == {"type": "user", "path": "/run/ns/user"}
    assert spec["linux"]["uidMappings"] == spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 65536, "size": 65536}]
    for dest in ("/etc/hosts", "/dev/shm"):
        assert find_mount(spec, dest)["uidMappings"] == [{"containerID": 0, "hostID": 65536, "size": 65536}]
    assert "uidMappings" not in find_mount(spec, "/proc")
    assert "uidMappings" not in build(rootfs, api.ContainerConfig(), sandbox=dataclasses.replace(USERNS_SANDBOX, userns_path=None,
                                                                                                 id_mappings=None))["linux"]


def test_cri_mounts_are_idmapped_only_with_the_pods_mappings(rootfs: Path, tmp_path: Path) -> None:
    ours = [api.IDMapping(container_id=0, host_id=65536, length=65536)]
    cfg = api.ContainerConfig(mounts=[api.Mount(container_path="/v", host_path=str(tmp_path), uidMappings=ours, gidMappings=ours),
                                      api.Mount(container_path="/plain", host_path=str(tmp_path))])
    spec = build(rootfs, cfg, sandbox=USERNS_SANDBOX)
    assert find_mount(spec, "/v")["gidMappings"] == [{"containerID": 0, "hostID": 65536, "size": 65536}]
    assert "uidMappings" not in find_mount(spec, "/plain")
    other = [api.IDMapping(container_id=0, host_id=131072, length=65536)]
    with pytest.raises(InvalidArgument, match="pod's"):
        build(rootfs, api.ContainerConfig(mounts=[api.Mount(container_path="/v", host_path=str(tmp_path), uidMappings=other,
                                                            gidMappings=ours)]), sandbox=USERNS_SANDBOX)
    with pytest.raises(InvalidArgument, match="no user namespace"):
        build(rootfs, cfg)
