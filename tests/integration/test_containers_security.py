"""Every security-context rule, observed from inside a real container."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import InvalidArgument
from cri_shim.oci import capabilities
from tests.support.busybox import make_rootfs
from tests.support.containers import Harness, module_harness, output

pytestmark = pytest.mark.integration
_ = module_harness  # the module-wide `h` fixture


def status_field(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


def mask(names: list[str]) -> str:
    bits = 0
    for n in names:
        bits |= 1 << capabilities.NAMES.index(n)
    return f"{bits:016x}"


def privileged_pod() -> api.PodSandboxConfig:
    sc = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="pod", namespace="ns", uid="u"))
    sc.linux.security_context.privileged = True
    return sc


def test_default_container_capabilities_seccomp_and_nnp(h: Harness) -> None:
    out, _, code = output(h, h.config("cat", "/proc/self/status"))
    assert code == 0
    assert status_field(out, "CapBnd") == mask(capabilities.DEFAULT)
    assert status_field(out, "CapEff") == mask(capabilities.DEFAULT)
    assert status_field(out, "CapInh") == "0" * 16
    assert status_field(out, "Seccomp") == "0"  # no profile asked: unconfined, as containerd
    assert status_field(out, "NoNewPrivs") == "0"


def test_no_new_privs_and_runtime_default_seccomp(h: Harness) -> None:
    cfg = h.config("cat", "/proc/self/status")
    cfg.linux.security_context.no_new_privs = True
    cfg.linux.security_context.seccomp.profile_type = api.SecurityProfile.RuntimeDefault
    out, _, _ = output(h, cfg)
    assert status_field(out, "NoNewPrivs") == "1"
    assert status_field(out, "Seccomp") == "2"


def test_deprecated_seccomp_path_forms(h: Harness) -> None:
    for path, expected in (("runtime/default", "2"), ("docker/default", "2"), ("unconfined", "0")):
        cfg = h.config("cat", "/proc/self/status")
        cfg.linux.security_context.seccomp_profile_path = path
        out, _, _ = output(h, cfg)
        assert status_field(out, "Seccomp") == expected, path


def test_localhost_seccomp_profile_blocks_chmod(h: Harness, tmp_path: Path) -> None:
    profile = tmp_path / "no-chmod.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["chmod", "fchmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}]}))
    cfg = h.config("chmod", "777", "/tmp")
    cfg.linux.security_context.seccomp.profile_type = api.SecurityProfile.Localhost
    cfg.linux.security_context.seccomp.localhost_ref = str(profile)
    _, err, code = output(h, cfg)
    assert code != 0 and "Operation not permitted" in err


def _hostname_config(h: Harness, profile: api.SecurityProfile) -> api.ContainerConfig:
    cfg = h.config("hostname", "ANewHostName")
    cfg.linux.security_context.capabilities.add_capabilities.append("SYS_ADMIN")
    cfg.linux.security_context.seccomp.CopyFrom(profile)
    return cfg


def test_sethostname_with_sys_admin_by_profile(h: Harness, tmp_path: Path) -> None:
    blocker = tmp_path / "no-hostname.json"
    blocker.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}))
    unconfined = api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined)
    localhost = api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref=str(blocker))
    default = api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault)
    assert output(h, _hostname_config(h, unconfined))[2] == 0
    assert output(h, _hostname_config(h, default))[2] == 0  # the default allows it with CAP_SYS_ADMIN
    assert output(h, _hostname_config(h, localhost))[2] != 0
    privileged = _hostname_config(h, localhost)
    privileged.linux.security_context.privileged = True
    assert output(h, privileged, sandbox_config=privileged_pod())[2] == 0  # privileged ignores seccomp


def test_runtime_default_blocks_unshare_without_sys_admin(h: Harness) -> None:
    cfg = h.config("unshare", "-U", "true")
    cfg.linux.security_context.seccomp.profile_type = api.SecurityProfile.RuntimeDefault
    _, err, code = output(h, cfg)
    assert code != 0 and "Operation not permitted" in err


def test_capability_add_drop_and_all(h: Harness) -> None:
    cfg = h.config("cat", "/proc/self/status")
    cfg.linux.security_context.capabilities.drop_capabilities.append("ALL")
    assert status_field(output(h, cfg)[0], "CapBnd") == "0" * 16
    cfg = h.config("cat", "/proc/self/status")
    cfg.linux.security_context.capabilities.add_capabilities.append("ALL")
    assert status_field(output(h, cfg)[0], "CapBnd") == mask(capabilities.grantable(h.host.last_cap, h.host.bounding_caps))
    cfg = h.config("cat", "/proc/self/status")
    cfg.linux.security_context.capabilities.drop_capabilities.extend(["ALL"])
    cfg.linux.security_context.capabilities.add_capabilities.extend(["NET_ADMIN", "cap_kill"])
    assert status_field(output(h, cfg)[0], "CapEff") == mask(["CAP_NET_ADMIN", "CAP_KILL"])


def test_net_admin_needed_to_change_links(h: Harness) -> None:
    assert output(h, h.config("ip", "link", "set", "lo", "mtu", "1280"))[2] != 0
    cfg = h.config("ip", "link", "set", "lo", "mtu", "1280")
    cfg.linux.security_context.capabilities.add_capabilities.append("NET_ADMIN")
    assert output(h, cfg)[2] == 0


def test_dropping_net_raw_breaks_ping(h: Harness) -> None:
    cfg = h.config("ping", "-c", "1", "127.0.0.1")
    cfg.linux.security_context.capabilities.drop_capabilities.append("NET_RAW")
    _, err, code = output(h, cfg)
    assert code != 0 and "permission denied" in err.lower()


def test_privileged_container(h: Harness) -> None:
    cfg = h.config("sh", "-c", "ip link add foo0 type bridge && echo made; grep -E '^(CapBnd|Seccomp)' /proc/self/status; "
                   "ls /sys/firmware | wc -l; test -e /dev/loop0 && echo loop; touch /sys/fs/cgroup/x 2>&1 | grep -c Read-only")
    cfg.linux.security_context.privileged = True
    out, _, code = output(h, cfg, sandbox_config=privileged_pod())
    lines = out.splitlines()
    assert lines[0] == "made"
    assert status_field(out, "CapBnd") == mask(capabilities.grantable(h.host.last_cap, h.host.bounding_caps))
    assert status_field(out, "Seccomp") == "0"
    assert "loop" in lines
    with pytest.raises(InvalidArgument, match="privileged"):
        h.create(cfg)  # an unprivileged pod cannot hold a privileged container


def test_users_and_groups(h: Harness) -> None:
    cfg = h.config("sh", "-c", "id -u; id -g; id -G")
    cfg.linux.security_context.run_as_user.value = 1001
    cfg.linux.security_context.run_as_group.value = 1002
    cfg.linux.security_context.supplemental_groups.extend([1234, 5678])
    assert output(h, cfg)[0].splitlines() == ["1001", "1002", "1002 1234 5678"]
    cfg = h.config("id", "-nu")
    cfg.linux.security_context.run_as_username = "nobody"
    assert output(h, cfg)[0] == "nobody"
    cfg = h.config("id", "-u")
    cfg.linux.security_context.run_as_group.value = 5
    with pytest.raises(InvalidArgument, match="run_as_group"):
        h.create(cfg)


@pytest.mark.parametrize(("policy", "groups"), [(api.Merge, "1000 1234 50000"), (api.Strict, "1000 1234")])
def test_supplemental_groups_policy(h: Harness, policy: int, groups: str) -> None:
    rootfs = h.dir / f"rootfs-sgp-{policy}"
    if not rootfs.exists():
        make_rootfs(rootfs, users=[("root", 0, 0, "/root"), ("user1000", 1000, 1000, "/")],
                    groups=[("root", 0, []), ("user1000", 1000, []), ("group50000", 50000, ["user1000"])])
    cfg = h.config("id", "-G")
    cfg.linux.security_context.run_as_user.value = 1000
    cfg.linux.security_context.supplemental_groups.append(1234)
    cfg.linux.security_context.supplemental_groups_policy = policy
    out, _, _ = output(h, cfg, rootfs=rootfs)
    assert sorted(out.split(), key=int) == groups.split()


def test_image_user_forms(h: Harness) -> None:
    from cri_shim.image.imageconfig import ImageConfig

    for user, expected in (("www-data", "33 33"), ("33:0", "33 0"), ("nobody:www-data", "65534 33"), ("1234", "1234 0")):
        out, _, _ = output(h, h.config("sh", "-c", "echo $(id -u) $(id -g)"), image=ImageConfig(user=user))
        assert out == expected, user


def test_readonly_rootfs_and_paths(h: Harness) -> None:
    cfg = h.config("touch", "/test")
    cfg.linux.security_context.readonly_rootfs = True
    _, err, code = output(h, cfg)
    assert code != 0 and "Read-only file system" in err
    assert output(h, h.config("touch", "/test"))[2] == 0
    cfg = h.config("touch", "/tmp/test")
    cfg.linux.security_context.readonly_paths.append("/tmp")
    assert output(h, cfg)[1] == "touch: /tmp/test: Read-only file system"
    cfg = h.config("sh", "-c", "wc -c < /etc/passwd; ls /var/www | wc -l; touch /var/www/x")
    cfg.linux.security_context.masked_paths.extend(["/etc/passwd", "/var/www"])
    out, err, _ = output(h, cfg)
    assert out.splitlines() == ["0", "0"] and "Read-only file system" in err


def test_oom_score_adj_is_clamped_to_the_host_floor(h: Harness) -> None:
    cfg = h.config("cat", "/proc/self/oom_score_adj")
    cfg.linux.resources.oom_score_adj = -997
    assert output(h, cfg)[0] == str(max(-997, h.host.oom_score_adj_min))
    cfg = h.config("cat", "/proc/self/oom_score_adj")
    cfg.linux.resources.oom_score_adj = 500
    assert output(h, cfg)[0] == "500"


def test_hostname_env_cwd_and_sysctls(h: Harness) -> None:
    cfg = h.config("sh", "-c", "hostname; echo $HOSTNAME $FOO; pwd; cat /proc/sys/kernel/shm_rmid_forced")
    cfg.envs.add(key="FOO", value="bar")
    cfg.working_dir = "/var/www"
    sandbox = h.sandbox(sysctls={"kernel.shm_rmid_forced": "1"})
    assert output(h, cfg, sandbox=sandbox)[0].splitlines() == ["podhost", "podhost bar", "/var/www", "1"]
