"""Pods in user namespaces (hostUsers: false) on runc 1.1, with the idmapped mounts cri-shim makes.

Each pod gets a host range of its own. What is checked is what the pod and the host see: the
mapping inside, file ownership through the idmapped root and pod files, host ownership of what
the pod writes to a plain hostPath, isolation between pods of disjoint ranges and from host
files, idmapped CRI mounts, and that removal leaves nothing (no pin, no idmapped mount).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.images import Pusher, build_image, busybox_layers, dir_layer
from tests.support.pods import changes, remove_pod, run_pod, snapshot, status
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled,
    container_config,
    exec_sync,
    logged_pod,
    pull,
    pulled_daemon,
    pulling_from,
    run_container,
    verbose_info,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture

RANGE = 65536


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def mapping(host_id: int, length: int = RANGE, container_id: int = 0) -> api.IDMapping:
    return api.IDMapping(container_id=container_id, host_id=host_id, length=length)


def userns(host_id: int) -> api.NamespaceOption:
    return api.NamespaceOption(userns_options=api.UserNamespace(mode=api.POD, uids=[mapping(host_id)], gids=[mapping(host_id)]))


def userns_pod(pulled: Pulled, name: str, host_id: int) -> tuple[str, api.PodSandboxConfig]:
    pod = logged_pod(pulled.daemon, name, linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(namespace_options=userns(host_id))))
    return run_pod(pulled.cri, pod), pod


def userns_container(pulled: Pulled, sid: str, pod: api.PodSandboxConfig, name: str, host_id: int,
                     mounts: list[api.Mount] | None = None, image: str = "", add_caps: tuple[str, ...] = ()) -> str:
    cfg = container_config(name, "sleep", "3600", image=image or pulled.image, mounts=mounts or [])
    cfg.linux.security_context.namespace_options.CopyFrom(userns(host_id))
    cfg.linux.security_context.capabilities.add_capabilities.extend(add_caps)
    return run_container(pulled.cri, sid, pod, cfg)


def sh(cri: Cri, cid: str, script: str) -> api.ExecSyncResponse:
    return exec_sync(cri, cid, "sh", "-c", script)


def ok(cri: Cri, cid: str, script: str) -> str:
    answer = sh(cri, cid, script)
    assert answer.exit_code == 0, answer
    return answer.stdout.decode()


def owner(cri: Cri, cid: str, path: str) -> str:
    """uid:gid of path as the container sees it."""
    return ok(cri, cid, f"stat -c %u:%g {path}").strip()


def test_a_pod_runs_in_its_user_namespace_with_its_files_owned_by_its_root(pulled: Pulled) -> None:
    cri = pulled.cri
    sid, pod = userns_pod(pulled, "userns", 200000)
    cid = userns_container(pulled, sid, pod, "c", 200000)
    assert ok(cri, cid, "cat /proc/self/uid_map").split() == ["0", "200000", str(RANGE)]
    assert ok(cri, cid, "cat /proc/self/gid_map").split() == ["0", "200000", str(RANGE)]
    for path in ("/", "/bin/busybox", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/dev/shm"):
        assert owner(cri, cid, path) == "0:0", path
    ok(cri, cid, "echo hi > /new && touch /dev/shm/x && echo 127.0.0.2 other >> /etc/hosts")
    # The container's own processes are the pod's host ids, not root.
    pid = verbose_info(cri, cid)["pid"]
    assert (os.stat(f"/proc/{pid}").st_uid, os.stat(f"/proc/{pid}").st_gid) == (200000, 200000)
    st, info = status(cri, sid)
    assert st.linux.namespaces.options.userns_options.mode == api.POD
    assert [(m.container_id, m.host_id, m.length) for m in st.linux.namespaces.options.userns_options.uids] == [(0, 200000, RANGE)]
    assert info["userNamespace"]["uidMappings"] == [{"containerID": 0, "hostID": 200000, "size": RANGE}]
    idmapped = {m["destination"]: m["how"] for m in verbose_info(cri, cid)["idmappedMounts"]}
    assert idmapped["/"].startswith("overlay over idmapped layers")
    assert {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/dev/shm"} <= idmapped.keys()
    spec = verbose_info(cri, cid)["runtimeSpec"]
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 200000, "size": RANGE}]
    assert {"type": "user", "path": info["userNamespace"]["path"]} in spec["linux"]["namespaces"]
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}
