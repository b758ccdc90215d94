"""Pods in user namespaces (hostUsers: false) on runc 1.1, with the idmapped mounts cri-shim makes.

Each pod gets a host range of its own. What is checked is what the pod and the host see: the
mapping inside, file ownership through the idmapped root and pod files, host ownership of what
the pod writes to a plain hostPath, isolation between pods of disjoint ranges and from host
files, idmapped CRI mounts, and that removal leaves nothing (no pin, no idmapped mount).
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.images import Pusher, build_image, busybox_layers, dir_layer
from tests.support.portforward_client import PortForward
from tests.support.pods import changes, remove_pod, run_pod, snapshot, status
from tests.support.registry import Registry
from tests.support.userns import RANGE, mapping, userns
from tests.support.workloads import (
    Pulled,
    container_config,
    exec_sync,
    logged_pod,
    pull,
    pulled_daemon,
    pulling_from,
    run_container,
    until,
    userns_container_config,
    userns_pod_config,
    verbose_info,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture


@pytest.fixture(autouse=True)
def _offered(pulled: Pulled) -> None:
    """A host without what user namespaces need offers none (runtime/features.py): these skip there."""
    offered = {h.name: h.features.user_namespaces for h in pulled.cri.runtime.Status(api.StatusRequest()).runtime_handlers}
    if not offered.get(""):
        pytest.skip("the default runtime handler offers no user namespaces")

@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def userns_pod(pulled: Pulled, name: str, host_id: int) -> tuple[str, api.PodSandboxConfig]:
    pod = userns_pod_config(pulled.daemon, name, host_id)
    return run_pod(pulled.cri, pod), pod


def userns_container(pulled: Pulled, sid: str, pod: api.PodSandboxConfig, name: str, host_id: int,
                     mounts: list[api.Mount] | None = None, image: str = "", add_caps: tuple[str, ...] = ()) -> str:
    cfg = userns_container_config(name, host_id, image or pulled.image, mounts=mounts or [])
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
    pod = userns_pod_config(pulled.daemon, "userns", 200000)
    pod.hostname = "in-userns"
    pod.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "80"
    sid = run_pod(cri, pod)
    cid = userns_container(pulled, sid, pod, "c", 200000)
    assert ok(cri, cid, "cat /proc/self/uid_map").split() == ["0", "200000", str(RANGE)]
    # The pod's namespaces belong to its user namespace, set up as any pod's.
    assert ok(cri, cid, "hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start").split() == ["in-userns", "80"]
    assert "127.0.0.1" in ok(cri, cid, "ip -4 addr show lo 2>/dev/null || ifconfig lo")
    assert ok(cri, cid, "cat /proc/self/gid_map").split() == ["0", "200000", str(RANGE)]
    for path in ("/", "/bin/busybox", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/dev/shm"):
        assert owner(cri, cid, path) == "0:0", path
    ok(cri, cid, "echo hi > /new && touch /dev/shm/x && echo 127.0.0.2 other >> /etc/hosts")
    # The container's own processes are the pod's host ids, not root.
    pid = verbose_info(cri, cid)["pid"]
    assert (os.stat(f"/proc/{pid}").st_uid, os.stat(f"/proc/{pid}").st_gid) == (200000, 200000)
    # The runtime may give the container's stdio to its root (crun does): none of it, nor the
    # infra's, is the node's /dev/null, which stays root's.
    infra = status(cri, sid)[1]["pid"]
    assert all(stat.S_ISFIFO(os.stat(f"/proc/{p}/fd/{fd}").st_mode) for p in (pid, infra) for fd in (0, 1, 2))
    null = os.stat("/dev/null")
    assert (null.st_uid, null.st_gid, stat.S_IMODE(null.st_mode)) == (0, 0, 0o666)
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


def test_what_the_pod_root_writes_to_a_plain_host_path_is_owned_by_its_host_uid(pulled: Pulled, tmp_path: Path) -> None:
    cri = pulled.cri
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    # kubelet's default PID mode: no infra process, each container a PID namespace of its own (in the pod's userns).
    pod = userns_pod_config(pulled.daemon, "hostpath", 200000)
    pod.linux.security_context.namespace_options.pid = api.CONTAINER
    sid = run_pod(cri, pod)
    cfg = userns_container_config("c", 200000, pulled.image, mounts=[api.Mount(container_path="/shared", host_path=str(shared))])
    cfg.linux.security_context.namespace_options.pid = api.CONTAINER
    cid = run_container(cri, sid, pod, cfg)
    assert ok(cri, cid, "cat /proc/1/cmdline | tr '\\0' ' '").strip() == "sleep 3600"
    ok(cri, cid, "echo x > /shared/by-root && mkdir /shared/dir")
    for name in ("by-root", "dir"):
        st = os.stat(shared / name)
        assert (st.st_uid, st.st_gid) == (200000, 200000), name
    # Host files keep their host ids: root's are nobody's inside.
    (shared / "host-file").write_text("host")
    assert owner(cri, cid, "/shared/host-file") == "65534:65534"
    remove_pod(cri, sid)


def test_an_image_file_of_uid_1000_is_uid_1000_inside(pulled: Pulled, registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "layer"
    (root / "home" / "user").mkdir(parents=True)
    (root / "home" / "user" / "file").write_text("mine")
    for path in (root / "home" / "user", root / "home" / "user" / "file"):
        os.chown(path, 1000, 1000)
    image = build_image(busybox_layers(tmp_path / "base") + [dir_layer(root)], {"Cmd": ["sh"], "Env": ["PATH=/bin"]})
    Pusher(registry.url).push(image, "userns-owned", "latest")
    ref = pull(pulled.cri, f"{registry.host}/userns-owned:latest")
    sid, pod = userns_pod(pulled, "owned", 300000)
    volume = api.Mount(container_path="/image", image=api.ImageSpec(image=ref), readonly=True)
    cid = userns_container(pulled, sid, pod, "c", 300000, image=ref, mounts=[volume])
    assert owner(pulled.cri, cid, "/home/user/file") == "1000:1000"
    # The same image as an image volume: its layers are idmapped too.
    assert owner(pulled.cri, cid, "/image/home/user/file") == "1000:1000" and owner(pulled.cri, cid, "/image/bin") == "0:0"
    # Changed inside, it is copied up still 1000's: on disk with the pod's host id for 1000.
    ok(pulled.cri, cid, "echo more >> /home/user/file")
    assert owner(pulled.cri, cid, "/home/user/file") == "1000:1000"
    upper = Path(pulled.daemon.config["paths"]["state_dir"]) / "rootfs" / cid / "upper" / "home" / "user" / "file"
    assert (upper.stat().st_uid, upper.stat().st_gid) == (301000, 301000)
    remove_pod(pulled.cri, sid)


def test_pods_of_disjoint_ranges_cannot_read_each_others_private_files(pulled: Pulled, tmp_path: Path) -> None:
    cri = pulled.cri
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    mount = [api.Mount(container_path="/shared", host_path=str(shared))]
    sid_a, pod_a = userns_pod(pulled, "a", 400000)
    a = userns_container(pulled, sid_a, pod_a, "a", 400000, mounts=mount)
    sid_b, pod_b = userns_pod(pulled, "b", 500000)
    b = userns_container(pulled, sid_b, pod_b, "b", 500000, mounts=mount, add_caps=("SYS_ADMIN",))
    ok(cri, a, "echo secret > /shared/a && chmod 600 /shared/a")
    assert ok(cri, a, "cat /shared/a") == "secret\n"
    answer = sh(cri, b, "cat /shared/a")
    assert answer.exit_code != 0 and b"secret" not in answer.stdout, answer
    assert b"Permission denied" in answer.stderr, answer
    assert sh(cri, b, "chmod 644 /shared/a").exit_code != 0
    assert sh(cri, b, "rm /shared/a").exit_code != 0  # the sticky directory is the host's, a's file not b's
    assert os.stat(shared / "a").st_uid == 400000
    remove_pod(cri, sid_a)
    remove_pod(cri, sid_b)


def test_cap_sys_admin_inside_does_not_reach_host_owned_files(pulled: Pulled, tmp_path: Path) -> None:
    cri = pulled.cri
    host = tmp_path / "host"
    host.mkdir()
    secret = host / "secret"
    secret.write_text("host secret")
    secret.chmod(0o600)
    sid, pod = userns_pod(pulled, "admin", 600000)
    cid = userns_container(pulled, sid, pod, "c", 600000, add_caps=("SYS_ADMIN", "DAC_READ_SEARCH", "FOWNER"),
                           mounts=[api.Mount(container_path="/host", host_path=str(host))])
    for attempt in ("cat /host/secret", "chmod 666 /host/secret", "chown 0 /host/secret", "echo x > /host/secret",
                    "touch /host/new", "cat /proc/1/root/host/secret"):
        answer = sh(cri, cid, attempt)
        assert answer.exit_code != 0 and b"host secret" not in answer.stdout, (attempt, answer)
    # Its mount namespace is its user namespace's: a mount there covers the host directory for it alone.
    ok(cri, cid, "mount -t tmpfs none /host && touch /host/over")
    assert secret.read_text() == "host secret" and (secret.stat().st_mode & 0o777) == 0o600
    assert sorted(os.listdir(host)) == ["secret"]
    remove_pod(cri, sid)


def test_a_mount_with_the_pods_mappings_is_idmapped_and_keeps_host_ownership(pulled: Pulled, tmp_path: Path) -> None:
    cri = pulled.cri
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "config").write_text("from the host")
    volume.chmod(0o755)
    sid, pod = userns_pod(pulled, "idmapped", 700000)
    ids = [mapping(700000)]
    m = api.Mount(container_path="/volume", host_path=str(volume), uidMappings=ids, gidMappings=ids)
    cid = userns_container(pulled, sid, pod, "c", 700000, mounts=[m])
    assert owner(cri, cid, "/volume/config") == "0:0"
    ok(cri, cid, "echo written > /volume/by-root")
    st = os.stat(volume / "by-root")
    assert (st.st_uid, st.st_gid) == (0, 0)  # files keep their meaning: the pod's root writes as root
    got = cri.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status.mounts
    assert [(x.container_path, [(i.host_id, i.length) for i in x.uidMappings]) for x in got] == [("/volume", [(700000, RANGE)])]
    assert "/volume" in {e["destination"] for e in verbose_info(cri, cid)["idmappedMounts"]}
    remove_pod(cri, sid)


def _pod_with(options: api.NamespaceOption, **security: Any) -> api.PodSandboxConfig:
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="hostile", namespace="test-ns", uid="uid-hostile"),
        linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=options, **security)))


def _userns(mode: int = api.POD, uids: list[api.IDMapping] | None = None, gids: list[api.IDMapping] | None = None,
            **modes: int) -> api.NamespaceOption:
    good = [mapping(800000)]
    return api.NamespaceOption(userns_options=api.UserNamespace(
        mode=mode, uids=good if uids is None else uids, gids=good if gids is None else gids), **modes)


HOSTILE_PODS = [
    ("no uid mapping", _userns(uids=[]), "exactly one uid mapping"),
    ("no gid mapping", _userns(gids=[]), "exactly one gid mapping"),
    ("two uid mappings", _userns(uids=[mapping(800000), mapping(900000, container_id=RANGE)]), "exactly one uid mapping"),
    ("container id 0 unmapped", _userns(uids=[mapping(800000, container_id=1)]), "container id 0"),
    ("zero length", _userns(gids=[mapping(800000, length=0)]), "at least 65536"),
    ("one id only", _userns(uids=[mapping(800000, length=1)]), "at least 65536"),
    ("host root mapped", _userns(uids=[mapping(0)]), "host id 0"),
    ("past 32 bits", _userns(uids=[mapping(2**32 - RANGE)]), "32-bit"),
    ("wraps past 32 bits", _userns(gids=[mapping(2**32 - 1, length=2**32 - 1)]), "32-bit"),
    ("mode CONTAINER", _userns(mode=api.CONTAINER), "CONTAINER is not supported"),
    ("mode TARGET", _userns(mode=api.TARGET), "TARGET is not supported"),
    ("unknown mode", _userns(mode=9), "9 is not supported"),
    ("NODE with mappings", _userns(mode=api.NODE), "NODE takes no"),
    ("host network", _userns(network=api.NODE), "host's network"),
    ("host IPC", _userns(ipc=api.NODE), "host's ipc"),
    ("host PID", _userns(pid=api.NODE), "host's pid"),
]


def test_hostile_user_namespace_requests_are_refused_and_leave_nothing(pulled: Pulled) -> None:
    unmapped = [("infra user not mapped", _pod_with(_userns(), run_as_user=api.Int64Value(value=RANGE)), "run_as_user 65536"),
                ("infra group not mapped", _pod_with(_userns(), run_as_group=api.Int64Value(value=2**31)), "run_as_group")]
    for label, config, message in [(label, _pod_with(options), message) for label, options, message in HOSTILE_PODS] + unmapped:
        with pytest.raises(grpc.RpcError) as err:
            run_pod(pulled.cri, config)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, label
        assert message in err.value.details(), (label, err.value.details())
        assert changes(pulled.before, snapshot(pulled.daemon)) == {}, label


def test_hostile_container_requests_in_a_user_namespace_pod_are_refused_and_leave_nothing(pulled: Pulled, tmp_path: Path) -> None:
    cri = pulled.cri
    sid, pod = userns_pod(pulled, "hostile-containers", 900000)
    plain_sid = run_pod(cri, logged_pod(pulled.daemon, "plain"))
    volume = tmp_path / "v"
    volume.mkdir()
    before = snapshot(pulled.daemon)
    other = [mapping(100000)]
    ours = [mapping(900000)]
    probes = [
        (sid, "mappings not the pod's", {"mounts": [api.Mount(container_path="/v", host_path=str(volume), uidMappings=other, gidMappings=other)]},
         None, "must be the pod's"),
        (sid, "idmapped with propagation", {"mounts": [api.Mount(container_path="/v", host_path=str(volume), uidMappings=ours, gidMappings=ours,
                                                                 propagation=api.PROPAGATION_HOST_TO_CONTAINER)]}, None, "private propagation"),
        (sid, "a filesystem without idmapped mounts", {"mounts": [
            api.Mount(container_path="/v", host_path=str(volume), uidMappings=ours, gidMappings=ours),
            api.Mount(container_path="/p", host_path="/proc/sys", uidMappings=ours, gidMappings=ours)]}, None, "cannot be idmapped"),
        (sid, "host user namespace", {}, api.NamespaceOption(userns_options=api.UserNamespace(mode=api.NODE)), "userns mode POD"),
        (sid, "host PID namespace", {}, api.NamespaceOption(pid=api.NODE), "host's pid"),
        (plain_sid, "userns POD in a pod without one", {}, userns(900000), "no user namespace"),
        (plain_sid, "idmapped mount in a pod without one", {"mounts": [api.Mount(container_path="/v", host_path=str(volume), uidMappings=ours,
                                                                                 gidMappings=ours)]}, None, "no user namespace"),
    ]
    for target, label, fields, options, message in probes:
        cfg = container_config("hostile", "true", image=pulled.image, **fields)
        if options is not None:
            cfg.linux.security_context.namespace_options.CopyFrom(options)
        with pytest.raises(grpc.RpcError) as err:
            cri.runtime.CreateContainer(api.CreateContainerRequest(pod_sandbox_id=target, config=cfg, sandbox_config=pod))
        code = grpc.StatusCode.FAILED_PRECONDITION if "idmapped mounts" in label else grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.code() == code, (label, err.value.details())
        assert message in err.value.details(), (label, err.value.details())
        assert changes(before, snapshot(pulled.daemon)) == {}, label
    remove_pod(cri, sid)
    remove_pod(cri, plain_sid)


def test_port_forward_and_exec_reach_a_user_namespaced_pod(pulled: Pulled) -> None:
    cri = pulled.cri
    sid, pod = userns_pod(pulled, "forwarded", 1100000)
    cfg = userns_container_config("web", 1100000, pulled.image)
    cfg.command[:] = ["sh", "-c", "mkdir -p /www && echo hello from userns > /www/index.html && exec httpd -f -p 8080 -h /www"]
    cid = run_container(cri, sid, pod, cfg)
    until(lambda: sh(cri, cid, "wget -q -O /dev/null http://127.0.0.1:8080/index.html").exit_code == 0, "httpd serving")
    url = cri.runtime.PortForward(api.PortForwardRequest(pod_sandbox_id=sid, port=[8080])).url

    async def fetch() -> tuple[bytes, bytes]:
        pf = await PortForward.start(url)
        try:
            return await pf.exchange(8080, b"GET /index.html HTTP/1.0\r\n\r\n")
        finally:
            await pf.close()

    reply, error = asyncio.run(fetch())
    assert error == b"" and reply.endswith(b"hello from userns\n"), (reply, error)
    assert ok(cri, cid, "id -u") == "0\n"
    remove_pod(cri, sid)
