"""Hostile requests through a real daemon: decisions never taken on the caller's word, and
status codes and echoes that stay exact and bounded.

Each test gets its own daemon with busybox pulled (the pulled fixture), asserts the status code
of the hostile call and that the leak snapshot equals the one taken before it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.support.client import api
from tests.support.daemon import Daemon
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled,
    container_config,
    create,
    exec_sync,
    logged_pod,
    pulled_daemon,
    pulling_from,
    remove,
    run_container,
    start,
    wait_state,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture

UNKNOWN_TYPE = 7  # no SecurityProfile.ProfileType has this number; proto3 passes it through
# One "rpc failed" line of the daemon's log, with its clipped error; far below what is echoed.
LOG_LINE_BOUND = 2048


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def refused(call: Callable[[], object], code: grpc.StatusCode, pattern: str) -> str:
    """Runs a call that must fail with code and a message matching pattern; the message."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    assert re.search(pattern, err.value.details()), err.value.details()
    return err.value.details()


def log_size(daemon: Daemon) -> int:
    return daemon.log_path.stat().st_size


def sleeper(name: str, image: str) -> api.ContainerConfig:
    """A container whose one process sleeps (no children coming and going between snapshots)."""
    return container_config(name, "sleep", "3600", image=image)


def test_privileged_is_decided_on_the_stored_pod(pulled: Pulled) -> None:
    """A CreateContainer whose sandbox_config claims a privileged pod gets no privileged container
    in an unprivileged one."""
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "unpriv")
    sid = run_pod(cri, pod)
    before = snapshot(d)
    claimed = api.PodSandboxConfig()
    claimed.CopyFrom(pod)
    claimed.linux.security_context.privileged = True
    config = container_config("priv", "true", image=pulled.image)
    config.linux.security_context.privileged = True
    refused(lambda: create(cri, sid, claimed, config), grpc.StatusCode.INVALID_ARGUMENT, "privileged pod sandbox")
    assert changes(before, snapshot(d)) == {}
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_pid_target_must_be_a_container_of_the_same_pod(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    victim_pod, pod = logged_pod(d, "victim"), logged_pod(d, "attacker")
    victim_sid, sid = run_pod(cri, victim_pod), run_pod(cri, pod)
    victim = run_container(cri, victim_sid, victim_pod, sleeper("victim", pulled.image))
    neighbour = run_container(cri, sid, pod, sleeper("neighbour", pulled.image))
    before = snapshot(d)

    def targeting(name: str, target: str) -> api.ContainerConfig:
        config = container_config(name, "sleep", "600", image=pulled.image)
        config.linux.security_context.namespace_options.pid = api.TARGET
        config.linux.security_context.namespace_options.target_id = target
        return config

    refused(lambda: create(cri, sid, pod, targeting("spy", victim)), grpc.StatusCode.INVALID_ARGUMENT,
            f"does not belong to sandbox {sid}")
    refused(lambda: create(cri, sid, pod, targeting("spy", victim[:12])), grpc.StatusCode.INVALID_ARGUMENT, "does not belong")
    refused(lambda: create(cri, sid, pod, targeting("spy", "f" * 64)), grpc.StatusCode.NOT_FOUND, "not found")
    assert changes(before, snapshot(d)) == {}

    # the same pod's running container may be the target; a stopped one may not
    sharer = create(cri, sid, pod, targeting("sharer", neighbour))
    start(cri, sharer)
    seen = exec_sync(cri, sharer, "sh", "-c", "cat /proc/[0-9]*/cmdline").stdout
    assert b"sleep\x003600\x00" in seen  # the neighbour's process, in the namespace it shares
    remove(cri, sharer)
    cri.runtime.StopContainer(api.StopContainerRequest(container_id=neighbour, timeout=0))
    wait_state(cri, neighbour, api.CONTAINER_EXITED)
    refused(lambda: create(cri, sid, pod, targeting("late", neighbour)), grpc.StatusCode.FAILED_PRECONDITION, "not running")
    remove_pod(cri, sid)
    remove_pod(cri, victim_sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_bidirectional_propagation_is_refused_to_unprivileged_containers(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "bidi")
    sid = run_pod(cri, pod)
    before = snapshot(d)
    host_dir = d.dir / "never-made"
    config = container_config("bidi", "true", image=pulled.image,
                              mounts=[api.Mount(container_path="/mnt", host_path=str(host_dir),
                                                propagation=api.PROPAGATION_BIDIRECTIONAL)])
    refused(lambda: create(cri, sid, pod, config), grpc.StatusCode.INVALID_ARGUMENT, "bidirectional propagation is only for privileged")
    assert not host_dir.exists()
    assert changes(before, snapshot(d)) == {}
    remove_pod(cri, sid)


@pytest.mark.parametrize("profile", ["seccomp", "apparmor"])
def test_unknown_profile_types_are_refused(pulled: Pulled, profile: str) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "profiles")
    sid = run_pod(cri, pod)
    before = snapshot(d)
    config = container_config("prof", "true", image=pulled.image)
    getattr(config.linux.security_context, profile).CopyFrom(
        api.SecurityProfile(profile_type=UNKNOWN_TYPE, localhost_ref="/etc/hostname"))
    refused(lambda: create(cri, sid, pod, config), grpc.StatusCode.INVALID_ARGUMENT, f"unknown {profile} profile type 7")
    assert changes(before, snapshot(d)) == {}
    remove_pod(cri, sid)


def test_a_request_that_does_not_parse_is_invalid_and_logged_in_one_short_line(pulled: Pulled) -> None:
    d = pulled.daemon
    with grpc.insecure_channel(d.endpoint) as channel:
        for method in ("RuntimeService/ContainerStatus", "RuntimeService/GetContainerEvents", "ImageService/PullImage"):
            stream = method.endswith("Events")
            kind = channel.unary_stream if stream else channel.unary_unary
            call = kind(f"/runtime.v1.{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b)
            size = log_size(d)
            with pytest.raises(grpc.RpcError) as err:
                answer = call(b"\xff\xff\xff\xff" * 1000, timeout=10)
                if stream:
                    list(answer)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert "malformed request" in err.value.details()
            grown = log_size(d) - size
            assert 0 < grown < LOG_LINE_BOUND and "Traceback" not in d.log_tail(3)
    assert changes(pulled.before, snapshot(d)) == {}


def test_a_huge_id_is_not_found_and_echoed_short(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    size = log_size(d)
    huge = "a" * 100_000
    details = refused(lambda: cri.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=huge)),
                      grpc.StatusCode.NOT_FOUND, "characters left out.*not found")
    assert len(details) < 1024
    refused(lambda: cri.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=huge)),
            grpc.StatusCode.NOT_FOUND, "characters left out.*not found")
    assert log_size(d) - size < 2 * LOG_LINE_BOUND
    assert changes(pulled.before, snapshot(d)) == {}


def test_ids_and_strings_the_kernel_cannot_take_are_invalid(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "kernel")
    sid = run_pod(cri, pod)
    before = snapshot(d)
    big_uid = container_config("uid", "true", image=pulled.image)
    big_uid.linux.security_context.run_as_user.value = 2**63 - 1
    refused(lambda: create(cri, sid, pod, big_uid), grpc.StatusCode.INVALID_ARGUMENT, "run_as_user 9223372036854775807 is out of range")
    nul_env = container_config("env", "true", image=pulled.image, envs=[api.KeyValue(key="A", value="b\x00c")])
    refused(lambda: create(cri, sid, pod, nul_env), grpc.StatusCode.INVALID_ARGUMENT, r"envs\[0\].value must not contain NUL")
    nul_dir = container_config("cwd", "true", image=pulled.image, working_dir="/tmp\x00/x")
    refused(lambda: create(cri, sid, pod, nul_dir), grpc.StatusCode.INVALID_ARGUMENT, "working_dir must not contain NUL")
    assert changes(before, snapshot(d)) == {}
    remove_pod(cri, sid)


def test_command_lines_too_long_for_the_kernel_are_invalid(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "e2big")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, sleeper("main", pulled.image))
    before = snapshot(d)
    refused(lambda: exec_sync(cri, cid, "echo", "x" * 3_000_000), grpc.StatusCode.INVALID_ARGUMENT, "per string")
    refused(lambda: exec_sync(cri, cid, "echo", *["x" * 100_000] * 40), grpc.StatusCode.INVALID_ARGUMENT, "ARG_MAX")
    refused(lambda: cri.runtime.Exec(api.ExecRequest(container_id=cid, cmd=["echo", "x" * 3_000_000], stdout=True)),
            grpc.StatusCode.INVALID_ARGUMENT, "per string")
    too_long = container_config("big", "echo", *["x" * 100_000] * 40, image=pulled.image)
    refused(lambda: create(cri, sid, pod, too_long), grpc.StatusCode.INVALID_ARGUMENT, "ARG_MAX")
    # a log path no file can have (nor conmon's command line carry)
    long_log = container_config("longlog", "true", image=pulled.image, log_path="l" * 200_000)
    refused(lambda: create(cri, sid, pod, long_log), grpc.StatusCode.INVALID_ARGUMENT, "too long")
    deep_log = container_config("deeplog", "true", image=pulled.image, log_path="d/" * 3000 + "x.log")
    refused(lambda: create(cri, sid, pod, deep_log), grpc.StatusCode.INVALID_ARGUMENT, "too long")
    assert changes(before, snapshot(d)) == {}
    assert exec_sync(cri, cid, "echo", "still", "fine").stdout == b"still fine\n"
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_slash_form_sysctls_reach_the_pod_and_its_containers(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    sysctls = {"net/ipv4/ip_forward": "1", "kernel/shm_rmid_forced": "1"}
    pod = logged_pod(d, "slash", linux=api.LinuxPodSandboxConfig(sysctls=sysctls))
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, sleeper("main", pulled.image))
    out = exec_sync(cri, cid, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shm_rmid_forced")
    assert out.stdout.split() == [b"1", b"1"], out.stderr
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
