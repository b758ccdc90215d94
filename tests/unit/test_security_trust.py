"""Decisions the runtime must not take on the caller's word, and what errors and logs echo back.

The rules one at a time, without a daemon: unknown profile types, bidirectional propagation,
slash-form sysctls, ids and NUL the kernel cannot take, argv the kernel would refuse, clipped
messages and log lines, and requests that do not parse. tests/integration/test_security_trust.py
drives the same rules through a real daemon.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from pathlib import Path

import grpc
import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import ECHO_LIMIT, InvalidArgument, NotFound, clip
from cri_shim.logs import JsonFormatter, TextFormatter
from cri_shim.oci import mounts, seccomp, security, values
from cri_shim.oci.context import HostInfo, SandboxInfo
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.oci.spec import build_spec
from cri_shim.sandbox import sysctl
from cri_shim.server import Malformed, _parser
from cri_shim.status import status_of
from tests.support.etc import minimal_rootfs

pytestmark = pytest.mark.unit

UNKNOWN_TYPE = 7  # no SecurityProfile.ProfileType has this number; proto3 keeps it anyway


def security_context(**fields: object) -> api.LinuxContainerSecurityContext:
    return api.LinuxContainerSecurityContext(**fields)


def test_unknown_seccomp_profile_type_is_refused() -> None:
    sc = security_context(seccomp=api.SecurityProfile(profile_type=UNKNOWN_TYPE, localhost_ref="/etc/profile.json"))
    with pytest.raises(InvalidArgument, match="unknown seccomp profile type 7"):
        seccomp.choose(sc)
    localhost = security_context(seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="/p.json"))
    assert seccomp.choose(localhost) == ("localhost", "/p.json")


@pytest.mark.parametrize("host_enabled", [True, False])
def test_unknown_apparmor_profile_type_is_refused(host_enabled: bool) -> None:
    sc = security_context(apparmor=api.SecurityProfile(profile_type=UNKNOWN_TYPE, localhost_ref="some-profile"))
    with pytest.raises(InvalidArgument, match="unknown apparmor profile type 7"):
        security.apparmor(sc, host_enabled)


def test_bidirectional_propagation_only_for_privileged_containers() -> None:
    mount = api.Mount(container_path="/m", host_path="/srv", propagation=api.PROPAGATION_BIDIRECTIONAL)
    with pytest.raises(InvalidArgument, match="privileged"):
        mounts.validate([mount], privileged=False)
    mounts.validate([mount], privileged=True)
    mounts.validate([api.Mount(container_path="/m", host_path="/srv", propagation=api.PROPAGATION_HOST_TO_CONTAINER)], privileged=False)


@pytest.mark.parametrize("name, dotted, path", [
    ("net/ipv4/ip_forward", "net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
    ("net.ipv4.ip_forward", "net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
    ("net/ipv4/conf/eth0.1/forwarding", "net.ipv4.conf.eth0/1.forwarding", "/proc/sys/net/ipv4/conf/eth0.1/forwarding"),
    ("net.ipv4.conf.eth0/1.forwarding", "net.ipv4.conf.eth0/1.forwarding", "/proc/sys/net/ipv4/conf/eth0.1/forwarding"),
    ("kernel/shm_rmid_forced", "kernel.shm_rmid_forced", "/proc/sys/kernel/shm_rmid_forced"),
])
def test_sysctl_names_are_normalised_to_the_dot_form(name: str, dotted: str, path: str) -> None:
    s = sysctl.parse(name, "1")
    assert (s.name, s.path) == (dotted, path)


def test_container_sysctls_read_pod_sysctls_as_the_pod_does() -> None:
    """Every sysctl a pod accepts reaches its containers' specs in dot form (runc turns dots into slashes)."""
    assert security.sysctls({"net/ipv4/ip_forward": "1", "kernel/msgmax": "8192"}, False, False) == {
        "net.ipv4.ip_forward": "1", "kernel.msgmax": "8192"}
    with pytest.raises(InvalidArgument, match="host"):
        security.sysctls({"net/ipv4/ip_forward": "1"}, True, False)
    with pytest.raises(InvalidArgument, match="not namespaced"):
        security.sysctls({"vm/swappiness": "1"}, False, False)


@pytest.mark.parametrize("field, value", [
    ("run_as_user", 2**63 - 1), ("run_as_user", 2**32 - 1), ("run_as_user", -1),
    ("run_as_group", 2**32), ("supplemental_groups", 2**40),
])
def test_ids_out_of_the_kernels_range_are_refused(field: str, value: int) -> None:
    config = api.ContainerConfig()
    sc = config.linux.security_context
    sc.run_as_user.value = 0
    if field == "supplemental_groups":
        sc.supplemental_groups.append(value)
    else:
        getattr(sc, field).value = value
    with pytest.raises(InvalidArgument, match="out of range"):
        values.check_config(config)


def test_the_highest_id_is_accepted() -> None:
    config = api.ContainerConfig()
    config.linux.security_context.run_as_user.value = 2**32 - 2
    config.linux.security_context.run_as_group.value = 2**32 - 2
    values.check_config(config)


def _with_nul(where: str) -> api.ContainerConfig:
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name="c"), image=api.ImageSpec(image="busybox"))
    if where == "env value":
        config.envs.add(key="A", value="b\x00c")
    elif where == "env key":
        config.envs.add(key="A\x00B", value="c")
    elif where == "args":
        config.args.extend(["ok", "x\x00y"])
    elif where == "working_dir":
        config.working_dir = "/w\x00"
    elif where == "device":
        config.devices.add(container_path="/dev/x\x00", host_path="/dev/null")
    elif where == "seccomp":
        config.linux.security_context.seccomp.localhost_ref = "/p\x00.json"
    elif where == "label":
        config.labels["k"] = "v\x00"
    return config


@pytest.mark.parametrize("where, field", [
    ("env value", "envs[0].value"), ("env key", "envs[0].key"), ("args", "args[1]"), ("working_dir", "working_dir"),
    ("device", "devices[0].container_path"), ("seccomp", "linux.security_context.seccomp.localhost_ref"),
    ("label", "labels['k']"),
])
def test_nul_in_any_string_of_the_config_is_refused(where: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        values.check_config(_with_nul(where))
    assert str(err.value) == f"{field} must not contain NUL"


def test_argv_the_kernel_would_refuse_is_refused() -> None:
    values.check_exec(["echo", "x" * (values.MAX_ARG_STRLEN - 1)], ["A=b"])
    with pytest.raises(InvalidArgument, match="per string"):
        values.check_exec(["echo", "x" * values.MAX_ARG_STRLEN])
    with pytest.raises(InvalidArgument, match="ARG_MAX"):
        values.check_exec(["echo"] + ["x" * 100_000] * 40)
    with pytest.raises(InvalidArgument, match="NUL"):
        values.check_exec(["echo"], ["A=\x00"])


def test_spec_refuses_a_process_execve_would_refuse(tmp_path: Path) -> None:
    rootfs = minimal_rootfs(tmp_path / "rootfs", "root:x:0:0::/root:/bin/sh\n", "root:x:0:\n")
    config = api.ContainerConfig(command=["echo"], args=["x" * 100_000] * 40)
    with pytest.raises(InvalidArgument, match="ARG_MAX"):
        build_spec("c1", config, api.PodSandboxConfig(), SandboxInfo(id="sb", pid_ns_path="/proc/1/ns/pid"),
                   ImageConfig(), rootfs, HostInfo())


def test_an_image_user_out_of_range_is_refused(tmp_path: Path) -> None:
    rootfs = minimal_rootfs(tmp_path / "rootfs", "big:x:99999999999:0::/:/bin/sh\n", "root:x:0:\n")
    with pytest.raises(InvalidArgument, match="uid 99999999999 is out of range"):
        build_spec("c1", api.ContainerConfig(command=["true"]), api.PodSandboxConfig(),
                   SandboxInfo(id="sb", pid_ns_path="/proc/1/ns/pid"), ImageConfig(user="big"), rootfs, HostInfo())


def test_status_messages_are_clipped_and_keep_their_code() -> None:
    echoed = f"container {'a' * 100_000!r} not found"
    code, message = status_of(NotFound(echoed))
    assert code == grpc.StatusCode.NOT_FOUND
    assert message.startswith("container 'aaaa") and message.endswith("aaaa' not found") and len(message) < ECHO_LIMIT + 64
    assert f"({len(echoed) - ECHO_LIMIT} characters left out)" in message
    assert clip("short") == "short"


def test_e2big_is_the_requests_fault() -> None:
    code, message = status_of(OSError(errno.E2BIG, "Argument list too long", "conmon"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "too long" in message


def _record(msg: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("cri_shim.test", logging.INFO, __file__, 1, msg, (), None)
    record.__dict__.update(fields)
    return record


def test_log_lines_are_clipped() -> None:
    huge = "x" * 1_000_000
    line = JsonFormatter().format(_record(huge, error=huge, rpc="Version"))
    fields = json.loads(line)
    assert len(line) < 3 * ECHO_LIMIT and fields["rpc"] == "Version" and fields["error"].startswith("xxx")
    assert len(TextFormatter().format(_record(huge, error=huge))) < 3 * ECHO_LIMIT
    try:
        raise ValueError(huge)
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    assert len(JsonFormatter().format(record)) < 10 * ECHO_LIMIT


def test_requests_that_do_not_parse_become_malformed() -> None:
    parse = _parser(api.ContainerStatusRequest)
    assert isinstance(parse(b"\xff\xff\xff"), Malformed)
    assert parse(api.ContainerStatusRequest(container_id="abc").SerializeToString()).container_id == "abc"
