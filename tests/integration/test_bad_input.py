"""The bad-input table: one row per malformed request field, across RPCs, with the status it gets.

Container rows drive the container layer through its harness (tests/support/containers.py) and
expect the error its RPC maps to a status (InvalidArgument: INVALID_ARGUMENT).

Every row runs against one daemon (with real registries for the image and container rows);
after each row the leak snapshot must equal the one taken before the table, and after the table
the pods, containers and images it used are removed and nothing is left. Rows answering OK
document the idempotent cases kubelet relies on (removing what is gone, asking for an unknown
image).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri_shim.errors import CriError, InvalidArgument
from tests.support.client import Cri, api
from tests.support.containers import Harness
from tests.support.images import LAYER_TYPES, Catalog, Layer, Pusher, build_image, tar_layer
from tests.support.daemon import Daemon
from tests.support.leftovers import release_leftovers
from tests.support.pods import changes, pod_config, remove_pod, run_pod, snapshot
from tests.support.registry import Registry, free_port
from tests.support.workloads import container_config, pull, run_container, wait_released, wait_state, warm_up_containers

pytestmark = pytest.mark.integration

OVERSIZED = 17 * 1024 * 1024
MISSING_ID = "0123456789abcdef" * 4


@dataclass
class World:
    """The daemon, clients and objects the rows refer to."""

    daemon: Daemon
    cri: Cri
    big: Cri  # a client allowed to send more than the daemon accepts
    registry: str
    unreachable: str
    pods: list[str]
    ambiguous: str  # a prefix of two pods' ids
    before: dict[str, Any]
    base: dict[str, Any]
    victim: Path  # a file hostile layers aim at
    twins: list[str]  # ids of two images
    twin_prefix: str  # a prefix of both
    busybox: str  # id of the image containers run
    exited: list[str]  # ids of exited containers in the first pod
    ambiguous_container: str  # a prefix of two of them


# The held pods' namespaces (quick to make), which their containers share as kubelet has them.
HELD_NAMESPACES = api.NamespaceOption(network=api.NODE, pid=api.CONTAINER, ipc=api.NODE)
HELD_CONTAINER = api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(namespace_options=HELD_NAMESPACES))


def _host_network_pod(name: str, pid: int = api.CONTAINER) -> api.PodSandboxConfig:
    namespaces = api.NamespaceOption(network=api.NODE, pid=pid, ipc=api.NODE)
    return pod_config(name, linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=namespaces)))


def _entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, 0o644, linkname
    return info


def _push_hostile_images(reg: Registry, victim: Path) -> None:
    """Images whose one layer is hostile: a name climbing out, a hardlink out, a symlinked
    directory written through, garbage; each must be refused with nothing stored or written."""
    climb = "../" * 20 + str(victim).lstrip("/")
    layers = {
        "dotdot": tar_layer([(_entry(climb), b"pwned")]),
        "hardlink": tar_layer([(_entry("escape", tarfile.LNKTYPE, linkname="../../../../../../etc/passwd"), None)]),
        "through-symlink": tar_layer([(_entry("up", tarfile.SYMTYPE, linkname=str(victim.parent)), None),
                                      (_entry("up/victim"), b"pwned")]),
        "garbage": Layer(b"not a tar", b"\x1f\x8b garbage, not gzip", LAYER_TYPES["gzip"]),
    }
    pusher = Pusher(reg.url)
    for name, layer in layers.items():
        pusher.push(build_image([layer], {"Cmd": ["sh"]}), f"hostile/{name}", "v1")


def _push_twins(reg: Registry) -> tuple[list[str], str]:
    """Two small images whose IDs share their first hex digit: their names and that digit."""
    layer = tar_layer([(_entry("hello"), b"hello")])
    seen: dict[str, int] = {}
    for i in range(17):
        image = build_image([layer], {"Cmd": ["sh"], "Env": [f"TWIN={i}"]})
        digit = image.id.removeprefix("sha256:")[0]
        Pusher(reg.url).push(image, f"twins/t{i}", "v1")
        if digit in seen:
            return [f"{reg.host}/twins/t{seen[digit]}:v1", f"{reg.host}/twins/t{i}:v1"], digit
        seen[digit] = i
    raise AssertionError("unreachable: 17 ids, 16 digits")


def _exited_until_ambiguous(cri: Cri, d: Daemon, sid: str, image: str) -> tuple[list[str], str]:
    """Containers run to their exit in the pod until two ids share their first hex digit: the
    ids and that digit. Each is released (root unmounted) before the next, so the snapshot after
    them holds still."""
    pod = _host_network_pod("held0")
    firsts: set[str] = set()
    exited: list[str] = []
    while True:
        cid = run_container(cri, sid, pod, container_config(f"exited{len(exited)}", "true", image=image, log_path="",
                                                            linux=HELD_CONTAINER))
        wait_state(cri, cid, api.CONTAINER_EXITED)
        wait_released(cri, d, cid)
        exited.append(cid)
        if cid[0] in firsts:
            return exited, cid[0]
        firsts.add(cid[0])


@pytest.fixture(scope="module")
def world(catalog: Catalog) -> Iterator[World]:
    with Registry() as reg:
        victim = Path(tempfile.mkdtemp(prefix="victim", dir="/tmp")) / "victim"
        victim.write_text("untouched")
        _push_hostile_images(reg, victim)
        twins, twin_prefix = _push_twins(reg)
        unreachable = f"127.0.0.1:{free_port()}"
        d = Daemon({"images": {"insecure_registries": [reg.host, catalog.host, unreachable]}})
        d.start()
        cri = Cri(d.endpoint)
        big = Cri(d.endpoint, max_message=4 * OVERSIZED)
        try:
            # Pulled once, then removed: the directories containers leave by design exist from now on.
            warm_up_containers(cri, d, pull(cri, catalog.ref("busybox")))
            cri.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=catalog.ref("busybox"))))
            base = snapshot(d)
            twin_ids = [cri.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=t))).image_ref for t in twins]
            busybox = pull(cri, catalog.ref("busybox"))
            # Host-network pods (quick to make) until two ids share their first hex digit.
            pods: list[str] = []
            firsts: dict[str, str] = {}
            while True:
                # The first holds an infra process, whose cgroup keeps the daemon's default
                # cgroup parent (pruned when empty) in place through the table, as containers
                # that exited no longer do (their cgroups go at the exit).
                sid = run_pod(cri, _host_network_pod(f"held{len(pods)}", api.CONTAINER if pods else api.POD))
                pods.append(sid)
                if sid[0] in firsts:
                    break
                firsts[sid[0]] = sid
            exited, ambiguous_container = _exited_until_ambiguous(cri, d, pods[0], busybox)
            yield World(d, cri, big, reg.host, unreachable, pods, pods[-1][0], snapshot(d), base, victim, twin_ids, twin_prefix,
                        busybox, exited, ambiguous_container)
        finally:
            shutil.rmtree(victim.parent, ignore_errors=True)
            cri.close()
            big.close()
            d.stop()
            release_leftovers(d)
            shutil.rmtree(d.dir, ignore_errors=True)


@dataclass
class Row:
    label: str
    call: Callable[[World], Any]
    code: grpc.StatusCode
    message: str = ""  # a part of the status details
    check: Callable[[Any], bool] = lambda answer: True

    def __str__(self) -> str:
        return self.label


def _run(config: api.PodSandboxConfig, handler: str = "") -> Callable[[World], Any]:
    return lambda w: w.cri.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config, runtime_handler=handler))


def _ns(**modes: int) -> api.LinuxPodSandboxConfig:
    return api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=api.NamespaceOption(**modes)))


def _sandbox_status(sid: Callable[[World], str]) -> Callable[[World], Any]:
    return lambda w: w.cri.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid(w)))


def _stop(sid: Callable[[World], str]) -> Callable[[World], Any]:
    return lambda w: w.cri.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sid(w)))


def _remove(sid: Callable[[World], str]) -> Callable[[World], Any]:
    return lambda w: w.cri.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid(w)))


def _pull(image: Callable[[World], str]) -> Callable[[World], Any]:
    return lambda w: w.cri.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=image(w))), timeout=60)


def _image_status(image: str) -> Callable[[World], Any]:
    return lambda w: w.cri.image.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=image)))


def _remove_image(image: str) -> Callable[[World], Any]:
    return lambda w: w.cri.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=image)))


def _list_pods(**f: Any) -> Callable[[World], Any]:
    return lambda w: w.cri.runtime.ListPodSandbox(api.ListPodSandboxRequest(filter=api.PodSandboxFilter(**f)))


def _create(config: Callable[[World], api.ContainerConfig], sid: Callable[[World], str] = lambda w: w.pods[0]) -> Callable[[World], Any]:
    return lambda w: w.cri.runtime.CreateContainer(api.CreateContainerRequest(
        pod_sandbox_id=sid(w), config=config(w), sandbox_config=_host_network_pod("held0")))


def _busybox(name: str = "c", **fields: Any) -> Callable[[World], api.ContainerConfig]:
    """A container config for the busybox image (fields override; metadata=None leaves it out)."""
    def config(w: World) -> api.ContainerConfig:
        built = api.ContainerConfig(metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=w.busybox), command=["true"],
                                    linux=HELD_CONTAINER)
        for key, value in fields.items():
            built.ClearField(key) if value is None else getattr(built, key).CopyFrom(value)
        return built
    return config


def _edited(edit: Callable[[api.ContainerConfig, World], None]) -> Callable[[World], api.ContainerConfig]:
    """The busybox config, changed by edit (for the fields _busybox cannot set: scalars, nested ones)."""
    def config(w: World) -> api.ContainerConfig:
        built = _busybox()(w)
        edit(built, w)
        return built
    return config


def _pid(mode: int, target: Callable[[World], str] = lambda w: "") -> Callable[[api.ContainerConfig, World], None]:
    def edit(c: api.ContainerConfig, w: World) -> None:
        c.linux.security_context.namespace_options.pid = mode
        c.linux.security_context.namespace_options.target_id = target(w)
    return edit


def _container_call(rpc: str, request: Callable[[str], Any], cid: Callable[[World], str]) -> Callable[[World], Any]:
    return lambda w: getattr(w.cri.runtime, rpc)(request(cid(w)))


def _start(cid: Callable[[World], str]) -> Callable[[World], Any]:
    return _container_call("StartContainer", lambda c: api.StartContainerRequest(container_id=c), cid)


def _stop_container(cid: Callable[[World], str]) -> Callable[[World], Any]:
    return _container_call("StopContainer", lambda c: api.StopContainerRequest(container_id=c, timeout=1), cid)


def _remove_container(cid: Callable[[World], str]) -> Callable[[World], Any]:
    return _container_call("RemoveContainer", lambda c: api.RemoveContainerRequest(container_id=c), cid)


def _container_status(cid: Callable[[World], str]) -> Callable[[World], Any]:
    return _container_call("ContainerStatus", lambda c: api.ContainerStatusRequest(container_id=c), cid)


def _exec_sync(cid: Callable[[World], str], *cmd: str) -> Callable[[World], Any]:
    return _container_call("ExecSync", lambda c: api.ExecSyncRequest(container_id=c, cmd=list(cmd), timeout=5), cid)


INVALID, NOT_FOUND, OK = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OK
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

ROWS = [
    # RunPodSandbox: metadata and names
    Row("run: no metadata", _run(api.PodSandboxConfig()), INVALID, "metadata"),
    Row("run: empty name", _run(pod_config("")), INVALID, "name"),
    Row("run: empty namespace", _run(api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="x", uid="u"))), INVALID, "namespace"),
    Row("run: empty uid", _run(api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="x", namespace="n"))), INVALID, "uid"),
    Row("run: slash in name", _run(pod_config("a/b")), INVALID, "'/'"),
    Row("run: NUL in name", _run(pod_config("a\x00b")), INVALID, "NUL"),
    Row("run: NUL in namespace", _run(api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="x", namespace="n\x00", uid="u"))), INVALID, "NUL"),
    Row("run: slash in uid", _run(pod_config("x", uid="../../u")), INVALID, "'/'"),
    Row("run: unknown runtime handler", _run(pod_config("h"), "no-such-runtime"), INVALID, "runtime handler"),
    # RunPodSandbox: sizes
    Row("run: huge annotations", _run(pod_config("ann", annotations={"k": "v" * (256 * 1024)})), INVALID, "annotations"),
    Row("run: huge labels", _run(pod_config("lab", labels={f"k{i}": "v" * 1024 for i in range(300)})), INVALID, "labels"),
    Row("run: message over 16 MiB", lambda w: w.big.runtime.RunPodSandbox(
        api.RunPodSandboxRequest(config=pod_config("big", annotations={"k": "v" * OVERSIZED}))), grpc.StatusCode.RESOURCE_EXHAUSTED),
    Row("run: hostname too long", _run(pod_config("hn", hostname="h" * 65)), INVALID, "hostname"),
    # RunPodSandbox: enums and namespaces
    Row("run: unknown network namespace mode", _run(pod_config("e1", linux=_ns(network=7))), INVALID, "namespace mode"),
    Row("run: unknown pid namespace mode", _run(pod_config("e2", linux=_ns(pid=42))), INVALID, "namespace mode"),
    Row("run: unknown ipc namespace mode", _run(pod_config("e3", linux=_ns(ipc=-1))), INVALID, "namespace mode"),
    Row("run: TARGET pid mode for a pod", _run(pod_config("e4", linux=_ns(pid=api.TARGET))), INVALID, "TARGET"),
    Row("run: user namespace without mappings", _run(pod_config("userns", linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(
        namespace_options=api.NamespaceOption(userns_options=api.UserNamespace(mode=api.POD)))))), INVALID, "exactly one uid mapping"),
    Row("run: unknown port protocol", _run(pod_config("p1", port_mappings=[api.PortMapping(protocol=9, container_port=80, host_port=18401)])), INVALID, "protocol"),
    Row("run: container port 0", _run(pod_config("p2", port_mappings=[api.PortMapping(container_port=0, host_port=80)])), INVALID, "port"),
    Row("run: host port out of range", _run(pod_config("p3", port_mappings=[api.PortMapping(container_port=80, host_port=70000)])), INVALID, "port"),
    Row("run: host_ip not an address", _run(pod_config("p4", port_mappings=[api.PortMapping(container_port=80, host_port=18402, host_ip="localhost")])), INVALID, "host_ip"),
    # RunPodSandbox: sysctls, cgroups, paths
    Row("run: non-namespaced sysctl", _run(pod_config("s1", linux=api.LinuxPodSandboxConfig(sysctls={"kernel.pid_max": "100"}))), INVALID, "not namespaced"),
    Row("run: malformed sysctl", _run(pod_config("s2", linux=api.LinuxPodSandboxConfig(sysctls={"net..x": "1"}))), INVALID, "invalid sysctl"),
    Row("run: sysctl name escaping /proc/sys", _run(pod_config("s6", linux=api.LinuxPodSandboxConfig(sysctls={"net/../../../etc/x": "1"}))), INVALID, "sysctl"),
    Row("run: unknown net sysctl", _run(pod_config("s3", linux=api.LinuxPodSandboxConfig(sysctls={"net.ipv4.no_such_knob": "1"}))), INVALID, "no_such_knob"),
    Row("run: bad sysctl value", _run(pod_config("s4", linux=api.LinuxPodSandboxConfig(sysctls={"kernel.shm_rmid_forced": "banana"}))), INVALID, "shm_rmid_forced"),
    Row("run: net sysctl on host network", _run(pod_config("s5", linux=api.LinuxPodSandboxConfig(
        sysctls={"net.ipv4.ip_forward": "1"}, security_context=api.LinuxSandboxSecurityContext(namespace_options=api.NamespaceOption(network=api.NODE))))),
        INVALID, "host"),
    Row("run: systemd slice with cgroupfs", _run(pod_config("cg", linux=api.LinuxPodSandboxConfig(cgroup_parent="kubepods.slice"))), INVALID, "slice"),
    Row("run: cgroup parent escaping", _run(pod_config("cg2", linux=api.LinuxPodSandboxConfig(cgroup_parent="/../../escape"))), INVALID, "cgroup"),
    Row("run: DNS server not an address", _run(pod_config("d1", dns_config=api.DNSConfig(servers=["1.1.1.1\nnameserver 6.6.6.6"]))), INVALID, "dns server"),
    Row("run: newline in DNS search", _run(pod_config("d2", dns_config=api.DNSConfig(searches=["svc.local\nnameserver 6.6.6.6"]))), INVALID, "dns search"),
    Row("run: NUL in DNS option", _run(pod_config("d3", dns_config=api.DNSConfig(options=["ndots:5\x00"]))), INVALID, "dns option"),
    Row("run: relative log directory", _run(pod_config("ld", log_directory="var/log/pods/x")), INVALID, "log_directory"),
    # Sandbox ids
    Row("status: empty id", _sandbox_status(lambda w: ""), INVALID, "empty"),
    Row("status: unknown id", _sandbox_status(lambda w: MISSING_ID), NOT_FOUND, "not found"),
    Row("status: id with a path", _sandbox_status(lambda w: "../" + w.pods[0]), NOT_FOUND, "not found"),
    Row("status: ambiguous prefix", _sandbox_status(lambda w: w.ambiguous), INVALID, "ambiguous"),
    Row("stop: empty id", _stop(lambda w: ""), INVALID, "empty"),
    Row("stop: unknown id (already gone)", _stop(lambda w: MISSING_ID), OK),
    Row("stop: ambiguous prefix", _stop(lambda w: w.ambiguous), INVALID, "ambiguous"),
    Row("remove: empty id", _remove(lambda w: ""), INVALID, "empty"),
    Row("remove: unknown id (already gone)", _remove(lambda w: MISSING_ID), OK),
    Row("remove: ambiguous prefix", _remove(lambda w: w.ambiguous), INVALID, "ambiguous"),
    Row("list: ambiguous id filter matches nothing", lambda w: w.cri.runtime.ListPodSandbox(api.ListPodSandboxRequest(filter=api.PodSandboxFilter(id=w.ambiguous))), OK, check=lambda a: list(a.items) == []),
    Row("list: unknown state enum matches nothing", _list_pods(state=api.PodSandboxStateValue(state=42)), OK, check=lambda a: list(a.items) == []),
    # Runtime configuration
    Row("update runtime config: pod CIDR not a CIDR", lambda w: w.cri.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(
        runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr="10.0.0.0/99")))), INVALID, "not a CIDR"),
    Row("update runtime config: garbage pod CIDR", lambda w: w.cri.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(
        runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr="pods;rm -rf /")))), INVALID, "not a CIDR"),
    # Images
    Row("pull: empty image", _pull(lambda w: ""), INVALID, "image"),
    Row("pull: surrounded by spaces", _pull(lambda w: " busybox "), INVALID, "invalid image reference"),
    Row("pull: uppercase repository", _pull(lambda w: f"{w.registry}/BusyBox:1"), INVALID, "lowercase"),
    Row("pull: bad tag", _pull(lambda w: f"{w.registry}/busybox:bad!tag"), INVALID, "bad tag"),
    Row("pull: short digest", _pull(lambda w: f"{w.registry}/busybox@sha256:1234"), INVALID, "digest"),
    Row("pull: name over 255 characters", _pull(lambda w: f"{w.registry}/{'a' * 300}"), INVALID, "255"),
    Row("pull: path escaping in repository", _pull(lambda w: f"{w.registry}/../../etc/passwd"), INVALID, "invalid image reference"),
    Row("pull: unknown image", _pull(lambda w: f"{w.registry}/no/such-image:v1"), NOT_FOUND, "not found"),
    Row("pull: unreachable registry", _pull(lambda w: f"{w.unreachable}/busybox:v1"), grpc.StatusCode.UNAVAILABLE),
    *[Row(f"pull: hostile layer ({name})", _pull(lambda w, name=name: f"{w.registry}/hostile/{name}:v1"), code, message)
      for name, code, message in [
          ("dotdot", grpc.StatusCode.INTERNAL, "climbs out"),
          ("hardlink", grpc.StatusCode.INTERNAL, "climbs out"),
          ("through-symlink", grpc.StatusCode.INTERNAL, "layer refused"),
          ("garbage", grpc.StatusCode.INTERNAL, "layer refused"),
      ]],
    Row("pull: auth not base64", lambda w: w.cri.image.PullImage(api.PullImageRequest(
        image=api.ImageSpec(image=f"{w.registry}/no/such-image:v1"), auth=api.AuthConfig(auth="!!not base64!!"))), INVALID, "auth"),
    Row("pull: auth without a colon", lambda w: w.cri.image.PullImage(api.PullImageRequest(
        image=api.ImageSpec(image=f"{w.registry}/no/such-image:v1"), auth=api.AuthConfig(auth="dXNlcm5hbWU="))), INVALID, "auth"),
    Row("pull: message over 16 MiB", lambda w: w.big.image.PullImage(
        api.PullImageRequest(image=api.ImageSpec(image="x" * OVERSIZED))), grpc.StatusCode.RESOURCE_EXHAUSTED),
    Row("image status: empty image", _image_status(""), INVALID, "image"),
    Row("image status: unknown image", _image_status("example.com/none:v1"), OK, check=lambda a: not a.HasField("image")),
    Row("image status: malformed reference", _image_status("Bad Ref!"), INVALID, "invalid image reference"),
    Row("remove image: empty image", _remove_image(""), INVALID, "image"),
    Row("remove image: unknown image (already gone)", _remove_image("example.com/none:v1"), OK),
    Row("remove image: malformed reference", _remove_image("Bad Ref!"), INVALID, "invalid image reference"),
    Row("image status: ambiguous ID prefix", lambda w: _image_status(w.twin_prefix)(w), INVALID, "ambiguous"),
    Row("remove image: ambiguous ID prefix", lambda w: _remove_image(w.twin_prefix)(w), INVALID, "ambiguous"),
    Row("list images: ambiguous ID filter", lambda w: w.cri.image.ListImages(api.ListImagesRequest(
        filter=api.ImageFilter(image=api.ImageSpec(image=w.twin_prefix)))), INVALID, "ambiguous"),
    # CreateContainer
    Row("create container: no config", lambda w: w.cri.runtime.CreateContainer(api.CreateContainerRequest(
        pod_sandbox_id=w.pods[0])), INVALID, "config"),
    Row("create container: no metadata", _create(_busybox(metadata=None)), INVALID, "metadata"),
    Row("create container: empty name", _create(_busybox("")), INVALID, "name"),
    Row("create container: slash in name", _create(_busybox("a/b")), INVALID, "'/'"),
    Row("create container: no image", _create(_busybox(image=None)), INVALID, "image"),
    Row("create container: image not pulled", _create(_busybox(image=api.ImageSpec(image="example.com/never/pulled:v1"))),
        NOT_FOUND, "not found"),
    Row("create container: unknown sandbox", _create(_busybox(), lambda w: MISSING_ID), NOT_FOUND, "not found"),
    Row("create container: empty sandbox id", _create(_busybox(), lambda w: ""), INVALID, "pod_sandbox_id"),
    Row("create container: ambiguous sandbox prefix", _create(_busybox(), lambda w: w.ambiguous), INVALID, "ambiguous"),
    Row("create container: log path escaping the log directory", _create(_edited(
        lambda c, w: setattr(c, "log_path", "../../../../etc/evil.log"))), INVALID, "log path"),
    Row("create container: NUL in an environment value", _create(_edited(
        lambda c, w: c.envs.add(key="A", value="a\x00b"))), INVALID, "NUL"),
    Row("create container: unknown pid namespace mode", _create(_edited(_pid(9))), INVALID, "namespace mode"),
    Row("create container: TARGET pid without target", _create(_edited(_pid(api.TARGET))), INVALID, "target_id"),
    Row("create container: TARGET pid of an unknown container", _create(_edited(_pid(api.TARGET, lambda w: MISSING_ID))),
        NOT_FOUND, "not found"),
    Row("create container: TARGET pid of an exited container", _create(_edited(_pid(api.TARGET, lambda w: w.exited[0]))),
        FAILED_PRECONDITION, "not running"),
    # Container ids
    Row("start container: unknown id", _start(lambda w: MISSING_ID), NOT_FOUND, "not found"),
    Row("start container: empty id", _start(lambda w: ""), INVALID, "empty"),
    Row("start container: exited", _start(lambda w: w.exited[0]), FAILED_PRECONDITION, "created state"),
    Row("container status: unknown id", _container_status(lambda w: MISSING_ID), NOT_FOUND, "not found"),
    Row("container status: ambiguous prefix", _container_status(lambda w: w.ambiguous_container), INVALID, "ambiguous"),
    Row("stop container: empty id", _stop_container(lambda w: ""), INVALID, "empty"),
    Row("stop container: unknown id (already gone)", _stop_container(lambda w: MISSING_ID), OK),
    Row("stop container: ambiguous prefix", _stop_container(lambda w: w.ambiguous_container), INVALID, "ambiguous"),
    Row("stop container: negative timeout", lambda w: w.cri.runtime.StopContainer(api.StopContainerRequest(
        container_id=w.exited[0], timeout=-1)), INVALID, "negative"),
    Row("remove container: empty id", _remove_container(lambda w: ""), INVALID, "empty"),
    Row("remove container: unknown id (already gone)", _remove_container(lambda w: MISSING_ID), OK),
    Row("remove container: ambiguous prefix", _remove_container(lambda w: w.ambiguous_container), INVALID, "ambiguous"),
    Row("list containers: ambiguous id filter matches nothing", lambda w: w.cri.runtime.ListContainers(api.ListContainersRequest(
        filter=api.ContainerFilter(id=w.ambiguous_container))), OK, check=lambda a: list(a.containers) == []),
    Row("update resources: unknown id", _container_call("UpdateContainerResources", lambda c: api.UpdateContainerResourcesRequest(
        container_id=c, linux=api.LinuxContainerResources(cpu_shares=512)), lambda w: MISSING_ID), NOT_FOUND, "not found"),
    Row("update resources: exited container", _container_call("UpdateContainerResources", lambda c: api.UpdateContainerResourcesRequest(
        container_id=c, linux=api.LinuxContainerResources(cpu_shares=512)), lambda w: w.exited[0]), FAILED_PRECONDITION, "not running"),
    Row("reopen log: unknown id", _container_call("ReopenContainerLog", lambda c: api.ReopenContainerLogRequest(container_id=c),
        lambda w: MISSING_ID), NOT_FOUND, "not found"),
    Row("reopen log: exited container", _container_call("ReopenContainerLog", lambda c: api.ReopenContainerLogRequest(container_id=c),
        lambda w: w.exited[0]), FAILED_PRECONDITION, "not running"),
    Row("container stats: unknown id", _container_call("ContainerStats", lambda c: api.ContainerStatsRequest(container_id=c),
        lambda w: MISSING_ID), NOT_FOUND, "not found"),
    # ExecSync
    Row("exec sync: stopped container", _exec_sync(lambda w: w.exited[0], "true"), FAILED_PRECONDITION, "not running"),
    Row("exec sync: unknown id", _exec_sync(lambda w: MISSING_ID, "true"), NOT_FOUND, "not found"),
    Row("exec sync: empty command", _exec_sync(lambda w: w.exited[0]), INVALID, "cmd"),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_bad_input(world: World, row: Row) -> None:
    try:
        answer = row.call(world)
    except grpc.RpcError as err:
        assert (err.code(), row.label) == (row.code, row.label), err.details()
        assert row.message in err.details(), (row.label, err.details())
    else:
        if isinstance(answer, api.RunPodSandboxResponse):  # a refusal that failed: keep later rows apart
            remove_pod(world.cri, answer.pod_sandbox_id)
        if isinstance(answer, api.CreateContainerResponse):
            world.cri.runtime.RemoveContainer(api.RemoveContainerRequest(container_id=answer.container_id))
        assert row.code == OK, f"{row.label}: answered OK, expected {row.code.name}"
        assert row.check(answer), (row.label, answer)
    assert changes(world.before, snapshot(world.daemon)) == {}, row.label
    assert world.victim.read_text() == "untouched" and sorted(p.name for p in world.victim.parent.iterdir()) == ["victim"]
    assert sorted(p.id for p in world.cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items) == sorted(world.pods)
    listed = {c.id: c.state for c in world.cri.runtime.ListContainers(api.ListContainersRequest()).containers}
    assert listed == {cid: api.CONTAINER_EXITED for cid in world.exited}, row.label


def test_nothing_left_after_the_table(world: World) -> None:
    network = {c.type: c.status for c in world.cri.runtime.Status(api.StatusRequest()).status.conditions}
    assert network["NetworkReady"], "a refused pod CIDR must not have replaced the network's subnet"
    remove_pod(world.cri, run_pod(world.cri, pod_config("after")))
    for sid in world.pods:
        remove_pod(world.cri, sid)
    assert world.cri.runtime.ListContainers(api.ListContainersRequest()).containers == []
    images = [*world.twins, world.busybox]
    assert sorted(i.id for i in world.cri.image.ListImages(api.ListImagesRequest()).images) == sorted(images)
    for image_id in images:
        world.cri.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=image_id)))
    assert world.cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert world.cri.image.ListImages(api.ListImagesRequest()).images == []
    assert changes(world.base, snapshot(world.daemon)) == {}


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[Harness, dict[str, Any]]]:
    h = Harness()
    h.wait_exit(h.start(h.create(h.config("true"))))  # the layer's directories exist before the snapshot
    for record in list(h.runtime.store):
        h.run(h.runtime.remove(record))
    yield h, h.leftovers()
    h.close()


def _mount(**fields: Any) -> list[api.Mount]:
    return [api.Mount(**{"container_path": "/data", "host_path": "/tmp", **fields})]


def _ctr_ns(**modes: int) -> api.LinuxContainerConfig:
    return api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(namespace_options=api.NamespaceOption(**modes)))


CONTAINER_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("log path escaping the log directory", {"log_path": "../../../../etc/evil.log"}, "escapes"),
    ("log path with a dot-dot inside", {"log_path": "c/../../x.log"}, "escapes"),
    ("absolute log path", {"log_path": "/etc/evil.log"}, "relative"),
    ("NUL in log path", {"log_path": "c\x00.log"}, "NUL"),
    ("relative container path", {"mounts": _mount(container_path="data")}, "absolute"),
    ("relative host path", {"mounts": _mount(host_path="../../etc")}, "absolute"),
    ("empty host path", {"mounts": _mount(host_path="")}, "host path"),
    ("NUL in host path", {"mounts": _mount(host_path="/tmp/a\x00b")}, "NUL"),
    ("unknown mount propagation", {"mounts": _mount(propagation=9)}, "propagation"),
    ("recursive read-only but writable", {"mounts": _mount(recursive_read_only=True)}, "read-only"),
    ("relative device path", {"devices": [api.Device(container_path="dev/null", host_path="/dev/null", permissions="rwm")]}, "absolute"),
    ("host path not a device", {"devices": [api.Device(container_path="/dev/x", host_path="/etc/hostname", permissions="rwm")]}, "device"),
    ("bad device permissions", {"devices": [api.Device(container_path="/dev/x", host_path="/dev/null", permissions="rwx")]}, "permissions"),
    ("relative working dir", {"working_dir": "tmp"}, "working directory"),
    ("unknown pid namespace mode", {"linux": _ctr_ns(pid=9)}, "namespace mode"),
    ("unknown network namespace mode", {"linux": _ctr_ns(network=-3, pid=api.CONTAINER)}, "namespace mode"),
    ("TARGET pid without target", {"linux": _ctr_ns(pid=api.TARGET)}, "target_id"),
    ("unknown capability", {"linux": api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=["CAP_NO_SUCH"])))}, "capability"),
    ("relative seccomp localhost profile", {"linux": api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="profiles/x.json")))}, "absolute"),
    ("negative memory limit", {"linux": api.LinuxContainerConfig(resources=api.LinuxContainerResources(memory_limit_in_bytes=-5))}, "negative"),
    ("run_as_group without user", {"linux": api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
        run_as_group=api.Int64Value(value=5)))}, "run_as_group"),
    ("unknown user name", {"linux": api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
        run_as_username="nobody-here"))}, "not found"),
]


@pytest.mark.parametrize("label,fields,message", CONTAINER_ROWS, ids=[r[0] for r in CONTAINER_ROWS])
def test_bad_container_config(harness: tuple[Harness, dict[str, Any]], label: str, fields: dict[str, Any], message: str) -> None:
    h, before = harness
    config = h.config("true", **fields)
    if "linux" in fields and fields["linux"].security_context.HasField("namespace_options"):
        config.linux.security_context.namespace_options.CopyFrom(fields["linux"].security_context.namespace_options)
    try:
        record = h.create(config)
    except CriError as err:
        assert isinstance(err, InvalidArgument), (label, err)
        assert message in str(err), (label, str(err))
    else:
        h.run(h.runtime.remove(record))
        pytest.fail(f"{label}: the container was created")
    assert list(h.runtime.store) == []
    assert h.leftovers() == before, label
