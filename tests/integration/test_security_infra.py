"""The pod's infra process (PID 1 of a pod PID namespace) is confined at least as a container is.

The attack: a container that adds only CAP_SYS_PTRACE (not privileged, RuntimeDefault seccomp,
no_new_privs) reaches the infra process through /proc/1. Whatever it finds there must be the
infra's own empty root, never the host's files, and the process must hold nothing worth taking.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri_shim.runtime.seccompfilters import FILTER_ANNOTATION, FILTER_FILE
from tests.support.client import api
from tests.support.pods import changes, pod_config, remove_pod, run_pod, snapshot, status
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled,
    container_config,
    exec_sync,
    logged_pod,
    pulled_daemon,
    pulling_from,
    run_container,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines)}


def ptrace_container(image: str) -> api.ContainerConfig:
    cfg = container_config("esc", "sleep", "3600", image=image)
    sc = cfg.linux.security_context
    sc.capabilities.add_capabilities.append("SYS_PTRACE")
    sc.seccomp.profile_type = api.SecurityProfile.RuntimeDefault
    sc.no_new_privs = True
    return cfg


def test_a_ptrace_container_reaches_no_host_file_through_the_infra_process(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "esc")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, ptrace_container(pulled.image))
    shadow = exec_sync(cri, cid, "sh", "-c", "head -1 /proc/1/root/etc/shadow")
    assert shadow.exit_code != 0 and shadow.stdout == b"", shadow
    listing = exec_sync(cri, cid, "ls", "-a", "/proc/1/root/", "/proc/1/cwd/")
    assert listing.exit_code == 0, listing
    assert set(listing.stdout.decode().split()) <= {".", "..", "dev", "proc", "catatonit", "/proc/1/root/:", "/proc/1/cwd/:"}
    # Nor can it write there: the infra root is read-only, whoever writes.
    write = exec_sync(cri, cid, "sh", "-c", "echo x > /proc/1/root/owned")
    assert write.exit_code != 0
    assert exec_sync(cri, cid, "cat", "/proc/1/comm").stdout == b"catatonit\n"
    remove_pod(cri, sid)
    assert snapshot(pulled.daemon) == pulled.before, changes(pulled.before, snapshot(pulled.daemon))


def test_the_infra_process_has_no_capabilities_nnp_seccomp_and_an_unprivileged_user(pulled: Pulled) -> None:
    cri = pulled.cri
    sid = run_pod(cri, pod_config("confined"))
    _, info = status(cri, sid)
    pid = info["pid"]
    st = proc_status(pid)
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == st["CapInh"] == st["CapAmb"] == "0" * 16, st
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
    assert st["Uid"].split() == ["65535"] * 4 and st["Gid"].split() == ["65535"] * 4, st
    assert st["NSpid"].split()[-1] == "1"
    assert Path(f"/proc/{pid}/ns/mnt").stat().st_ino != Path("/proc/self/ns/mnt").stat().st_ino
    root_mount = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if line.split()[4] == "/")
    assert "ro" in root_mount[5].split(","), root_mount
    memberships = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    assert all(line.endswith(":" + info["infraCgroupsPath"]) for line in memberships), memberships
    # Its stdio are pipes, never the host's /dev/null, which a runtime may chown to it.
    assert all(stat.S_ISFIFO(os.stat(f"/proc/{pid}/fd/{fd}").st_mode) for fd in (0, 1, 2))
    remove_pod(cri, sid)
    assert snapshot(pulled.daemon) == pulled.before


def test_later_infra_processes_load_the_filter_their_runtime_compiled_and_enforce_it(pulled: Pulled) -> None:
    """A runtime that keeps the filter it compiled from the profile (crun) is handed it for the
    next infra containers of its handler: the filter they load is that one, byte for byte, and
    the kernel enforces it. A runtime that keeps none (runc) compiles the profile each time."""
    cri = pulled.cri
    pods = [run_pod(cri, pod_config(f"filter{i}")) for i in range(2)]
    state = pulled.daemon.dir / "run" / "infra" / "state"
    kept = {sid: list(state.glob(f"*/{sid}/{FILTER_FILE}")) for sid in pods}
    annotations = status(cri, pods[1])[1]["runtimeSpec"].get("annotations", {})
    if kept[pods[0]]:
        compiled = kept[pods[0]][0].read_bytes()
        assert annotations == {FILTER_ANNOTATION: base64.b64encode(compiled).decode()}
        assert [path.read_bytes() for path in kept[pods[1]]] == [compiled]
    else:
        assert FILTER_ANNOTATION not in annotations and kept[pods[1]] == []
    for sid in pods:
        st = proc_status(status(cri, sid)[1]["pid"])
        assert st["Seccomp"] == "2" and st["Seccomp_filters"] == "1", st
        remove_pod(cri, sid)
    assert snapshot(pulled.daemon) == pulled.before


def test_the_infra_process_runs_as_the_pods_user_and_group(pulled: Pulled) -> None:
    cri = pulled.cri
    config = pod_config("runas")
    config.linux.security_context.run_as_user.value = 1234
    config.linux.security_context.run_as_group.value = 2345
    sid = run_pod(cri, config)
    st = proc_status(status(cri, sid)[1]["pid"])
    assert st["Uid"].split()[0] == "1234" and st["Gid"].split()[0] == "2345", st
    assert st["CapEff"] == "0" * 16
    remove_pod(cri, sid)
    assert snapshot(pulled.daemon) == pulled.before


@pytest.mark.parametrize("field", ["run_as_user", "run_as_group"])
@pytest.mark.parametrize("value", [2**63 - 1, -1, 2**32 - 1])
def test_a_pod_id_out_of_range_is_refused_and_leaves_nothing(pulled: Pulled, field: str, value: int) -> None:
    config = pod_config("badid")
    getattr(config.linux.security_context, field).value = value
    with pytest.raises(grpc.RpcError) as err:
        run_pod(pulled.cri, config)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field in err.value.details()
    assert snapshot(pulled.daemon) == pulled.before
