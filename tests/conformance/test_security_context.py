"""critest "Security Context" specs (pkg/validate/security_context_linux.go): namespaces, users,
rootfs, privileges and capabilities, masked/readonly paths, supplemental groups policy, seccomp,
no_new_privs and user namespaces.

Where critest runs nginx, the image is our stand-in (tests/support/standin_images.py): a script
named nginx that writes /var/run/nginx.pid and carries "master process" in its command line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import ATTEMPT, PAUSE_COMMAND, Framework, eventually, expect_rejected, new_uuid
from tests.support.standin_images import BUSYBOX, NGINX, NONEWPRIVS, PREDEFINED_GID, PREDEFINED_GROUP, PREDEFINED_UID

pytestmark = pytest.mark.conformance

POD, CONTAINER, NODE, TARGET = cri.POD, cri.CONTAINER, cri.NODE, cri.TARGET


def container(f: Framework, prefix: str, image: str = BUSYBOX, command: list[str] | None = PAUSE_COMMAND,
              log: bool = False, **security: object) -> cri.ContainerConfig:
    """A container config with linux.security_context fields (critest builds one per spec)."""
    name = prefix + new_uuid()
    return cri.ContainerConfig(metadata=cri.ContainerMetadata(name=name, attempt=ATTEMPT), image=cri.ImageSpec(image=image),
                               command=command or [], log_path=name + ".log" if log else "",
                               linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(**security)))


def run(f: Framework, pod: tuple[str, cri.PodSandboxConfig], config: cri.ContainerConfig,
        state: int = cri.CONTAINER_RUNNING) -> str:
    container_id = f.create_container(config, *pod)
    f.start_container(container_id)
    f.wait_state(container_id, state)
    return container_id


# NamespaceOption -----------------------------------------------------------------------------


def namespace_pod(f: Framework, options: cri.NamespaceOption, log_dir: bool = False) -> tuple[str, cri.PodSandboxConfig]:
    return f.security_pod("NamespaceOption-PodSandbox-", log_dir=log_dir, dns=True, namespace_options=options)


def test_runtime_should_support_hostpid(f: Framework) -> None:
    options = cri.NamespaceOption(pid=NODE, ipc=POD, network=POD)
    pod = namespace_pod(f, options)
    nginx = run(f, pod, container(f, "nginx-container-hostpid-", NGINX, None, namespace_options=options))
    nginx_pid = f.exec_ok(nginx, ["sh", "-c", "while [ ! -f /var/run/nginx.pid ]; do sleep 1; done && cat /var/run/nginx.pid"])
    nginx_pid = nginx_pid.decode().strip()
    other = run(f, pod, container(f, "container-with-HostPID-test-", command=["sh", "-c", "sleep 1000"], namespace_options=options))
    pids = f.exec_ok(other, ["pidof", "nginx", "||", "true"]).decode().split()
    assert nginx_pid in pids, "nginx's pid should be seen by hostpid containers"


@pytest.fixture
def shm_segment() -> Iterator[str]:
    """critest's `ipcmk -M 1048576` on the host; removed afterwards (critest leaves it)."""
    out = subprocess.run(["ipcmk", "-M", "1048576"], check=True, capture_output=True, text=True).stdout
    segment = out.strip().removeprefix("Shared memory id: ")
    yield segment
    subprocess.run(["ipcrm", "-m", segment], capture_output=True)


def shm_ids_seen(f: Framework, mode: int) -> list[str]:
    options = cri.NamespaceOption(pid=POD, ipc=mode, network=POD)
    pod = namespace_pod(f, options)
    container_id = run(f, pod, container(f, "namespace-container-", namespace_options=options))
    rows = f.exec_ok(container_id, ["ipcs", "-m"]).decode().splitlines()[1:]
    return [row.split()[1] for row in rows if row.split()]


def test_runtime_should_support_hostipc_is_true(f: Framework, shm_segment: str) -> None:
    assert shm_segment in shm_ids_seen(f, NODE), "The shared memory segment should be included in the container"


def test_runtime_should_support_hostipc_is_false(f: Framework, shm_segment: str) -> None:
    assert shm_segment not in shm_ids_seen(f, POD), "The shared memory segment should not be included in the container"


def test_runtime_should_support_podpid(f: Framework) -> None:
    options = cri.NamespaceOption(pid=POD)
    pod = namespace_pod(f, options)
    nginx = run(f, pod, container(f, "nginx-container-process-namespace-", NGINX, None, namespace_options=options))
    f.exec_ok(nginx, ["sh", "-c", "while [ ! -f /var/run/nginx.pid ]; do sleep 1; done"])
    assert b"master process" not in f.exec_ok(nginx, ["cat", "/proc/1/cmdline"])


def test_runtime_should_support_containerpid(f: Framework) -> None:
    options = cri.NamespaceOption(pid=CONTAINER)
    pod = namespace_pod(f, options)
    nginx = run(f, pod, container(f, "nginx-container-pid-", NGINX, None, namespace_options=options))
    resp = f.exec_sync(nginx, ["sh", "-c", 'while ! cat /proc/1/cmdline | grep "master process"; do sleep 1; done'], timeout=30)
    assert resp.exit_code == 0, "nginx should be PID 1 of its own PID namespace"


@pytest.fixture
def host_listener() -> Iterator[str]:
    """A TCP port open on the host (critest's net.Listen(":0")) answering "hello"."""
    srv = socket.create_server(("", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello")

    threading.Thread(target=serve, daemon=True).start()
    yield str(srv.getsockname()[1])
    stop.set()
    srv.close()


def netstat_sees_port(f: Framework, port: str, network: int) -> bool:
    options = cri.NamespaceOption(pid=POD, ipc=POD, network=network)
    pod_id, config = namespace_pod(f, options, log_dir=True)
    spec = container(f, "container-with-HostNetwork-test-", command=["sh", "-c", "netstat -ln"], log=True,
                     namespace_options=options)
    container_id = f.create_container(spec, pod_id, config)
    f.start_container(container_id)
    f.wait_state(container_id, cri.CONTAINER_EXITED)
    return any(f":{port}" in e.content for e in f.log_entries(config, spec.log_path))


def test_runtime_should_support_hostnetwork_is_true(f: Framework, host_listener: str) -> None:
    assert netstat_sees_port(f, host_listener, NODE), f"host port {host_listener} should be in container's port list"


def test_runtime_should_support_hostnetwork_is_false(f: Framework, host_listener: str) -> None:
    assert not netstat_sees_port(f, host_listener, POD), f"host port {host_listener} should not be in container's port list"


# bucket --------------------------------------------------------------------------------------


def test_runtime_should_support_supplementalgroups(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    container_id = run(f, pod, container(f, "container-with-SupplementalGroups-test-", supplemental_groups=[1234, 5678]))
    groups = f.exec_ok(container_id, ["id", "-G"]).decode().split()
    assert "1234" in groups and "5678" in groups


def test_runtime_should_support_runasuser(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    container_id = run(f, pod, container(f, "container-with-RunAsUser-test-", run_as_user=cri.Int64Value(value=1001)))
    assert f.exec_ok(container_id, ["id", "-u"]) == b"1001\n"


def test_runtime_should_support_runasusername(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    container_id = run(f, pod, container(f, "container-with-RunAsUserName-test-", run_as_username="nobody"))
    assert f.exec_ok(container_id, ["id", "-nu"]) == b"nobody\n"


def test_runtime_should_support_runasgroup(f: Framework) -> None:
    pod = f.log_dir_pod()
    spec = container(f, "container-with-RunAsGroup-test-", command=["sh", "-c", "echo $(id -u):$(id -g)"], log=True,
                     run_as_user=cri.Int64Value(value=1001), run_as_group=cri.Int64Value(value=1002))
    run(f, pod, spec, cri.CONTAINER_EXITED)
    assert f.log_has(pod[1], spec.log_path, "1001:1002", "stdout"), f.log_entries(pod[1], spec.log_path)


def test_runtime_should_return_error_if_runasgroup_is_set_without_runasuser(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    spec = container(f, "container-with-RunAsGroup-without-RunAsUser-test-", command=["sh", "-c", "echo $(id -u):$(id -g)"],
                     run_as_group=cri.Int64Value(value=1002))
    expect_rejected(lambda: f.create_container_with_error(spec, *pod))


def readonly_rootfs_log(f: Framework, readonly: bool, prefix: str) -> tuple[cri.PodSandboxConfig, str]:
    pod = f.log_dir_pod()
    spec = container(f, prefix, command=["sh", "-c", "touch test.go && [ -f test.go ] && echo 'Found'"], log=True,
                     readonly_rootfs=readonly)
    run(f, pod, spec, cri.CONTAINER_EXITED)
    return pod[1], spec.log_path


def test_runtime_should_support_that_readonlyrootfs_is_false(f: Framework) -> None:
    config, log_path = readonly_rootfs_log(f, False, "container-with-ReadOnlyRootfs-false-test-")
    assert f.log_has(config, log_path, "Found", "stdout"), f.log_entries(config, log_path)


def test_runtime_should_support_that_readonlyrootfs_is_true(f: Framework) -> None:
    config, log_path = readonly_rootfs_log(f, True, "container-with-ReadOnlyRootfs-true-test-")
    assert f.log_has(config, log_path, "touch: test.go: Read-only file system", "stderr"), f.log_entries(config, log_path)


def can_add_bridge(f: Framework, container_id: str) -> bool:
    """critest's checkNetworkManagement: `brctl addbr foobar` needs CAP_NET_ADMIN."""
    return f.exec_sync(container_id, ["brctl", "addbr", "foobar"], timeout=30).exit_code == 0


def test_runtime_should_support_privileged_is_true(f: Framework) -> None:
    pod = f.security_pod("create-Privileged-PodSandbox-for-container-", privileged=True)
    container_id = run(f, pod, container(f, "container-with-isPrivileged-test-", privileged=True))
    assert can_add_bridge(f, container_id)


def test_runtime_should_support_privileged_is_false(f: Framework) -> None:
    pod = f.security_pod("create-Privileged-PodSandbox-for-container-", privileged=False)
    container_id = run(f, pod, container(f, "container-with-notPrivileged-test-", privileged=False))
    assert not can_add_bridge(f, container_id)


def capability_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig], prefix: str, add: list[str] | None = None,
                         drop: list[str] | None = None) -> str:
    caps = cri.Capability(add_capabilities=add or [], drop_capabilities=drop or [])
    return run(f, pod, container(f, prefix, capabilities=caps))


def test_runtime_should_support_adding_capability(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    assert can_add_bridge(f, capability_container(f, pod, "container-with-added-capability-test-", add=["NET_ADMIN"]))
    default = f.create_default_container(*pod, "container-with-notCapability-test-")
    f.start_and_wait(default)
    assert not can_add_bridge(f, default)


def test_runtime_should_support_dropping_capability(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    container_id = capability_container(f, pod, "container-with-dropped-capability-test-", drop=["NET_RAW"])
    resp = f.exec_fails(container_id, ["ping", "127.0.0.1"])
    assert resp.stdout, "ping prints its header before failing"
    assert b"permission denied" in resp.stderr


def cap_bnd(f: Framework, container_id: str) -> str:
    status = f.exec_ok(container_id, ["cat", "/proc/self/status"]).decode()
    match = re.search(r"CapBnd:\s(\S+)", status)
    assert match, status
    return match.group(1)


def test_runtime_should_support_adding_all_capabilities(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    assert cap_bnd(f, capability_container(f, pod, "container-with-added-all-capability-test-", add=["ALL"])) != "0" * 16


def test_runtime_should_support_dropping_all_capabilities(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    assert cap_bnd(f, capability_container(f, pod, "container-with-dropped-all-capability-test-", drop=["ALL"])) == "0" * 16


def test_runtime_should_support_maskedpaths(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    container_id = run(f, pod, container(f, "container-with-maskedpaths", masked_paths=["/bin/ls"]))
    assert f.exec_fails(container_id, ["/bin/sh", "-c", "ls"]).stderr == b"/bin/sh: ls: Permission denied\n"


def test_runtime_should_support_readonlypaths(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    container_id = run(f, pod, container(f, "container-with-readonlypaths", readonly_paths=["/tmp"]))
    assert f.exec_fails(container_id, ["touch", "/tmp/test"]).stderr == b"touch: /tmp/test: Read-only file system\n"


# SupplementalGroupsPolicy --------------------------------------------------------------------


def supplemental_groups_policy(f: Framework, policy: int, expected: list[int]) -> None:
    if not f.rc.Status(cri.StatusRequest()).features.supplemental_groups_policy:
        pytest.skip("The runtime does not support SupplementalGroupsPolicy feature (critest skips too)")
    pod = f.log_dir_pod()
    spec = container(f, "container-with-SupplementalGroupsPolicyMerge-", PREDEFINED_GROUP, ["sh", "-c", "id -G; sleep infinity"],
                     log=True, run_as_user=cri.Int64Value(value=PREDEFINED_UID), supplemental_groups=[1234],
                     supplemental_groups_policy=policy)
    container_id = run(f, pod, spec)
    want = cri.ContainerUser(linux=cri.LinuxContainerUser(uid=PREDEFINED_UID, gid=PREDEFINED_UID, supplemental_groups=expected))

    def user() -> cri.ContainerUser:
        status = f.container_status(container_id)
        got = cri.ContainerUser()
        got.CopyFrom(status.user)
        got.linux.supplemental_groups[:] = sorted(got.linux.supplemental_groups)
        return got

    eventually(user, lambda u: u == want, what="ContainerStatus.user")
    eventually(lambda: f.log_entries(pod[1], spec.log_path), bool, what="log")
    line = " ".join(map(str, expected))
    assert f.log_has(pod[1], spec.log_path, line, "stdout")
    assert f.exec_ok(container_id, ["id", "-G"]).decode() == line + "\n"


def test_if_the_container_s_primary_uid_belongs_to_some_groups_in_the_image_runtime_should_add_supplementalgroups_to_them(
        f: Framework) -> None:
    supplemental_groups_policy(f, cri.Merge, [PREDEFINED_UID, 1234, PREDEFINED_GID])


def test_even_if_the_container_s_primary_uid_belongs_to_some_groups_in_the_image_runtime_should_not_add_supplementalgroups_to_them(
        f: Framework) -> None:
    supplemental_groups_policy(f, cri.Strict, [PREDEFINED_UID, 1234])


# SeccompProfilePath --------------------------------------------------------------------------

BLOCK_HOSTNAME = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}
BLOCK_CHMOD = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}
SECCOMP_FIELD = ["grep", "Seccomp:", "/proc/self/status"]


@pytest.fixture(scope="module")
def profiles() -> Iterator[dict[str, str]]:
    """critest's seccomp-tests temp dir holding the two localhost profiles."""
    d = Path(tempfile.mkdtemp(prefix="seccomp-tests"))
    paths = {}
    for name, profile in (("block-host-name.json", BLOCK_HOSTNAME), ("block-chmod.json", BLOCK_CHMOD)):
        (d / name).write_text(json.dumps(profile))
        paths[name] = str(d / name)
    yield paths
    for p in paths.values():
        os.unlink(p)
    os.rmdir(d)


def seccomp_container(f: Framework, profile: cri.SecurityProfile | None) -> str:
    """critest's seccompTestContainer: the same profile on the sandbox and the container."""
    pod = f.security_pod("seccomp-sandbox-", seccomp=profile)
    return run(f, pod, container(f, "seccomp-container-", seccomp=profile))


def seccomp_mode(f: Framework, container_id: str) -> str:
    return f.exec_ok(container_id, SECCOMP_FIELD).decode().split()[-1]


def test_should_support_seccomp_unconfined_on_the_container(f: Framework) -> None:
    assert seccomp_mode(f, seccomp_container(f, cri.SecurityProfile(profile_type=cri.SecurityProfile.Unconfined))) == "0"


def test_should_support_seccomp_localhost_profile_on_the_container(f: Framework, profiles: dict[str, str]) -> None:
    profile = cri.SecurityProfile(profile_type=cri.SecurityProfile.Localhost, localhost_ref=profiles["block-chmod.json"])
    resp = f.exec_fails(seccomp_container(f, profile), ["chmod", "400", "/"])
    assert b"Operation not permitted" in resp.stderr


def test_should_support_seccomp_default_on_the_container(f: Framework) -> None:
    assert seccomp_mode(f, seccomp_container(f, cri.SecurityProfile())) == "2"


def test_should_support_nil_profile_which_is_unconfined(f: Framework) -> None:
    assert seccomp_mode(f, seccomp_container(f, None)) == "0"


def hostname_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig], profile: cri.SecurityProfile, privileged: bool,
                       caps: list[str]) -> str:
    spec = container(f, "container-with-block-hostname-seccomp-profile-test-", command=["sleep", "60"], privileged=privileged,
                     capabilities=cri.Capability(add_capabilities=caps), seccomp=profile)
    spec.image.user_specified_image = BUSYBOX
    return run(f, pod, spec)


def can_set_hostname(f: Framework, container_id: str) -> bool:
    return f.exec_sync(container_id, ["hostname", "ANewHostName"], timeout=30).exit_code == 0


def test_runtime_should_not_block_setting_host_name_with_unconfined_seccomp_and_sys_admin(f: Framework) -> None:
    pod = f.create_pod_sandbox_for_container()
    profile = cri.SecurityProfile(profile_type=cri.SecurityProfile.Unconfined)
    assert can_set_hostname(f, hostname_container(f, pod, profile, False, ["SYS_ADMIN"]))


def test_runtime_should_support_an_seccomp_profile_that_blocks_setting_hostname_with_sys_admin(
        f: Framework, profiles: dict[str, str]) -> None:
    pod = f.create_pod_sandbox_for_container()
    profile = cri.SecurityProfile(profile_type=cri.SecurityProfile.Localhost, localhost_ref=profiles["block-host-name.json"])
    assert not can_set_hostname(f, hostname_container(f, pod, profile, False, ["SYS_ADMIN"]))


def test_runtime_should_ignore_a_seccomp_profile_that_blocks_setting_hostname_when_privileged(
        f: Framework, profiles: dict[str, str]) -> None:
    pod = f.security_pod("create-Privileged-PodSandbox-for-container-", privileged=True)
    profile = cri.SecurityProfile(profile_type=cri.SecurityProfile.Localhost, localhost_ref=profiles["block-host-name.json"])
    assert can_set_hostname(f, hostname_container(f, pod, profile, True, []))


# NoNewPrivs ----------------------------------------------------------------------------------


def effective_uid_logged(f: Framework, prefix: str, no_new_privs: bool) -> tuple[cri.PodSandboxConfig, str]:
    if not f.images.has(NONEWPRIVS):
        pytest.skip("no C compiler here to build the nonewprivs stand-in (a setuid program printing its euid)")
    pod = f.log_dir_pod()
    spec = container(f, prefix, NONEWPRIVS, None, log=True, no_new_privs=no_new_privs, run_as_user=cri.Int64Value(value=1000))
    run(f, pod, spec, cri.CONTAINER_EXITED)
    return pod[1], spec.log_path


def test_should_not_allow_privilege_escalation_when_true(f: Framework) -> None:
    config, log_path = effective_uid_logged(f, "alpine-nnp-true-", True)
    assert f.log_has(config, log_path, "Effective uid: 1000", "stdout"), f.log_entries(config, log_path)


def test_should_allow_privilege_escalation_when_false(f: Framework) -> None:
    config, log_path = effective_uid_logged(f, "alpine-nnp-false-", False)
    assert f.log_has(config, log_path, "Effective uid: 0", "stdout"), f.log_entries(config, log_path)


# UserNamespaces ------------------------------------------------------------------------------

DEFAULT_MAPPING = [cri.IDMapping(container_id=0, host_id=1000, length=100000)]


def require_userns(f: Framework) -> None:
    handlers = f.rc.Status(cri.StatusRequest(verbose=True)).runtime_handlers
    if not any(h.name == "" and h.features.user_namespaces for h in handlers):
        pytest.skip("no runtime handler found which supports user namespaces (critest skips too)")


def userns_uid_map(f: Framework, options: cri.NamespaceOption) -> list[str]:
    require_userns(f)
    pod = f.security_pod("user-namespaces-pod-", log_dir=True, dns=True, namespace_options=options)
    spec = container(f, "user-namespaces-container-", command=["cat", "/proc/self/uid_map"], log=True,
                     namespace_options=options)
    run(f, pod, spec, cri.CONTAINER_EXITED)
    return [e.content for e in f.log_entries(pod[1], spec.log_path)]


def userns_pod_fails(f: Framework, userns: cri.UserNamespace) -> None:
    require_userns(f)
    config = f.pod_config("user-namespaces-pod-", linux=cri.LinuxPodSandboxConfig(
        security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption(userns_options=userns))))
    expect_rejected(lambda: f.run_pod_sandbox(config))


def test_runtime_should_support_namespacemode_pod(f: Framework) -> None:
    userns = cri.UserNamespace(mode=POD, uids=DEFAULT_MAPPING, gids=DEFAULT_MAPPING)
    lines = userns_uid_map(f, cri.NamespaceOption(userns_options=userns))
    assert any(re.search(r"\s+0\s+1000\s+100000$", line) for line in lines), lines


def test_runtime_should_support_namespacemode_node(f: Framework) -> None:
    lines = userns_uid_map(f, cri.NamespaceOption(userns_options=cri.UserNamespace(mode=NODE)))
    for host_line in Path("/proc/self/uid_map").read_text().splitlines():
        inside, outside, length = host_line.split()
        assert any(re.search(rf"\s+{inside}\s+{outside}\s+{length}", line) for line in lines), lines


def test_runtime_should_fail_if_more_than_one_mapping_provided(f: Framework) -> None:
    wrong = [cri.IDMapping(container_id=0, host_id=1000, length=100000), cri.IDMapping(container_id=0, host_id=2000, length=100000)]
    userns_pod_fails(f, cri.UserNamespace(mode=POD, uids=wrong, gids=wrong))


def test_runtime_should_fail_if_container_id_0_is_not_mapped(f: Framework) -> None:
    mapping = [cri.IDMapping(container_id=1, host_id=1000, length=100000)]
    userns_pod_fails(f, cri.UserNamespace(mode=POD, uids=mapping, gids=mapping))


def test_runtime_should_fail_with_namespacemode_container(f: Framework) -> None:
    userns_pod_fails(f, cri.UserNamespace(mode=CONTAINER))


def test_runtime_should_fail_with_namespacemode_target(f: Framework) -> None:
    userns_pod_fails(f, cri.UserNamespace(mode=TARGET))
