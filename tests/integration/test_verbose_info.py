"""Verbose ContainerStatus and PodSandboxStatus report what `crictl inspect` / `inspectp` users
read, with containerd's names: the OCI spec runc runs with (info.runtimeSpec), the process's
pid, the sandbox, the runtime; bounded, so that a huge spec never costs the status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import merge
from tests.support.pods import changes, remove_pod, run_pod, snapshot, status
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled,
    container_config,
    create,
    logged_pod,
    pulled_daemon,
    pulling_from,
    run_container,
    verbose_info,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture

MIB = 1024 * 1024
MESSAGE_LIMIT = 4 * MIB
# OCI namespace types by their /proc/<pid>/ns names.
PROC_NS = {"network": "net", "ipc": "ipc", "uts": "uts", "pid": "pid", "mount": "mnt", "cgroup": "cgroup", "user": "user"}


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    # A smaller message limit, so that a spec over its quarter stays under the kernel's ARG_MAX.
    return merge(pulling_from(registry), {"server": {"max_message_bytes": MESSAGE_LIMIT}})


def pod_with_pid(pulled: Pulled, name: str, pid: int) -> api.PodSandboxConfig:
    pod = logged_pod(pulled.daemon, name)
    pod.linux.security_context.namespace_options.pid = pid
    return pod


def sleeper(pulled: Pulled) -> api.ContainerConfig:
    """sleep 600 with a PID namespace of its own (kubelet's default)."""
    config = container_config("app", "sleep", "600", image=pulled.name)
    config.linux.security_context.namespace_options.pid = api.CONTAINER
    return config


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def assert_runs_in_its_namespaces(spec: dict[str, Any], pid: int) -> None:
    """Each namespace the spec names by path is the process's; each it asks to be made is not the host's."""
    for ns in spec["linux"]["namespaces"]:
        mine = ns_inode(f"/proc/{pid}/ns/{PROC_NS[ns['type']]}")
        if "path" in ns:
            assert ns_inode(ns["path"]) == mine, ns
        else:
            assert ns_inode(f"/proc/self/ns/{PROC_NS[ns['type']]}") != mine, ns


def assert_runtime_type(cri: Cri, info: dict[str, Any]) -> None:
    """runtimeType is the binary of the daemon's default handler (the pods here name none)."""
    handlers = json.loads(cri.runtime.Status(api.StatusRequest(verbose=True)).info["runtimeHandlers"])
    binary = info["runtimeType"]
    assert os.path.isabs(binary) and os.access(binary, os.X_OK), binary
    assert binary == handlers["checks"][handlers["default"]]["binary"], (binary, handlers)


def test_container_info_holds_the_spec_runc_runs_pid_sandbox_and_runtime(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = pod_with_pid(pulled, "inspect", api.CONTAINER)
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, sleeper(pulled))
    info = verbose_info(cri, cid)

    assert info["sandboxID"] == sid
    pid = info["pid"]
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00600\x00"
    assert_runtime_type(cri, info)
    spec = info["runtimeSpec"]
    assert spec == json.loads((Path(info["bundle"]) / "config.json").read_text())
    assert spec["process"]["args"] == ["sleep", "600"]
    assert {ns["type"] for ns in spec["linux"]["namespaces"]} >= {"network", "ipc", "uts", "pid", "mount"}
    assert_runs_in_its_namespaces(spec, pid)

    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_a_spec_too_large_for_the_reply_is_left_out_and_the_status_kept(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = pod_with_pid(pulled, "hugespec", api.CONTAINER)
    sid = run_pod(cri, pod)
    config = sleeper(pulled)
    value = "x" * (100 * 1024)
    config.envs.extend(api.KeyValue(key=f"BIG{i}", value=value) for i in range(15))  # 1.5 MiB, over 4 MiB / 4
    cid = create(cri, sid, pod, config)
    answer = cri.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    info = json.loads(answer.info["info"])
    assert "runtimeSpec" not in info and "over the" in info["runtimeSpecOmitted"]
    assert info["sandboxID"] == sid and answer.status.id == cid
    assert answer.ByteSize() < MESSAGE_LIMIT / 4

    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_sandbox_info_holds_the_infra_spec_of_a_pod_pid_namespace_only(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    shared = run_pod(cri, pod_with_pid(pulled, "sharedpid", api.POD))
    _, info = status(cri, shared)
    spec = info["runtimeSpec"]
    assert os.path.basename(spec["process"]["args"][0]) == "catatonit"
    assert Path(f"/proc/{info['pid']}/comm").read_text() == "catatonit\n"
    assert_runs_in_its_namespaces(spec, info["pid"])
    assert "pid" in {ns["type"] for ns in spec["linux"]["namespaces"]}
    assert_runtime_type(cri, info)
    assert info["runtimeHandler"] == "" and info["config"]["metadata"]["name"] == "sharedpid"

    own = run_pod(cri, pod_with_pid(pulled, "ownpid", api.CONTAINER))
    _, info = status(cri, own)
    assert "runtimeSpec" not in info and "runtimeSpecOmitted" not in info and info["pid"] == 0
    assert_runtime_type(cri, info)
    assert info["config"]["metadata"]["name"] == "ownpid"

    remove_pod(cri, shared)
    remove_pod(cri, own)
    assert changes(pulled.before, snapshot(d)) == {}
