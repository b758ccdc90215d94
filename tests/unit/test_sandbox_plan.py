"""RunPodSandbox validation and planning: what is refused, what namespaces and files a pod gets."""

from __future__ import annotations

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.config import Config
from cri_shim.errors import InvalidArgument
from cri_shim.network.pod import PortMapping
from cri_shim.sandbox import sysctl
from cri_shim.sandbox.files import hosts_content, resolv_content
from cri_shim.sandbox.record import Infra, Sandbox, reservation_name
from cri_shim.sandbox.validate import plan

pytestmark = pytest.mark.unit


def config(**fields: object) -> api.PodSandboxConfig:
    return api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="p", namespace="n", uid="u"), **fields)


def options(**modes: int) -> api.LinuxPodSandboxConfig:
    return api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=api.NamespaceOption(**modes)))


def test_the_zero_value_means_every_namespace_of_the_pod() -> None:
    p = plan(config(), "", Config(), "node1")
    assert p.own_namespaces == ("net", "ipc", "uts") and p.pod_pid and p.shm
    assert p.hostname == "node1" and p.cgroup_parent == "/cri-shim"


def test_host_modes_own_nothing_and_uts_follows_the_network() -> None:
    p = plan(config(linux=options(network=api.NODE, ipc=api.NODE, pid=api.NODE)), "", Config(), "node1")
    assert p.own_namespaces == () and not p.pod_pid and not p.shm
    p = plan(config(linux=options(network=api.NODE, pid=api.CONTAINER)), "", Config(), "node1")
    assert p.own_namespaces == ("ipc",) and not p.pod_pid


def test_ports_keep_only_host_ports_with_protocol_and_host_ip() -> None:
    mappings = [
        api.PortMapping(container_port=80),
        api.PortMapping(container_port=53, host_port=5353, protocol=api.UDP, host_ip="127.0.0.1"),
    ]
    p = plan(config(port_mappings=mappings), "", Config(), "h")
    assert p.ports == (PortMapping(5353, 53, "udp", "127.0.0.1"),)
    assert p.ports[0].capability() == {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}


def test_known_handlers_pass_and_the_cgroup_parent_is_the_pods() -> None:
    p = plan(config(linux=api.LinuxPodSandboxConfig(cgroup_parent="/kubepods/pod1")), "runc", Config(), "h")
    assert p.cgroup_parent == "/kubepods/pod1"


@pytest.mark.parametrize(
    ("request_config", "handler", "message"),
    [
        (api.PodSandboxConfig(), "", "no metadata"),
        (api.PodSandboxConfig(metadata=api.PodSandboxMetadata(namespace="n", uid="u")), "", "name must not be empty"),
        (config(), "kata", "unknown runtime handler"),
        (config(hostname="a b"), "", "hostname"),
        (config(linux=options(network=api.TARGET)), "", "TARGET"),
        (config(port_mappings=[api.PortMapping(container_port=80, host_port=70000)]), "", "out of range"),
        (config(port_mappings=[api.PortMapping(container_port=80, host_port=80, host_ip="nope")]), "", "host_ip"),
        (config(linux=api.LinuxPodSandboxConfig(sysctls={"kernel.shm_rmid_forced": "1"}, **{"security_context": options(ipc=api.NODE).security_context})), "", "host"),
        (config(annotations={"a": "b" * 262144}), "", "annotations total"),
    ],
)
def test_refusals(request_config: api.PodSandboxConfig, handler: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        plan(request_config, handler, Config(), "h")


@pytest.mark.parametrize(
    ("name", "kind", "path"),
    [
        ("net.ipv4.ip_forward", "net", "/proc/sys/net/ipv4/ip_forward"),
        ("net/ipv4/conf/eth0.1/forwarding", "net", "/proc/sys/net/ipv4/conf/eth0.1/forwarding"),
        ("kernel.shm_rmid_forced", "ipc", "/proc/sys/kernel/shm_rmid_forced"),
        ("kernel.msgmax", "ipc", "/proc/sys/kernel/msgmax"),
        ("kernel.sem", "ipc", "/proc/sys/kernel/sem"),
        ("fs.mqueue.msg_max", "ipc", "/proc/sys/fs/mqueue/msg_max"),
    ],
)
def test_namespaced_sysctls(name: str, kind: str, path: str) -> None:
    s = sysctl.parse(name, "1")
    assert (s.kind, s.path) == (kind, path)


@pytest.mark.parametrize("name", ["kernel.pid_max", "vm.swappiness", "fs.mqueue", "net..x", "net/../../etc", "", "kernel.semx"])
def test_other_sysctls_are_refused(name: str) -> None:
    with pytest.raises(sysctl.SysctlError):
        sysctl.parse(name, "1")


def test_sysctl_values_cannot_carry_newlines() -> None:
    with pytest.raises(sysctl.SysctlError, match="value"):
        sysctl.parse("net.ipv4.ip_forward", "1\n0")


def test_resolv_conf_and_hosts_contents() -> None:
    dns = api.DNSConfig(servers=["1.1.1.1"], searches=["a.local", "b"], options=["ndots:5", "edns0"])
    assert resolv_content(dns) == "search a.local b\nnameserver 1.1.1.1\noptions ndots:5 edns0\n"
    assert resolv_content(api.DNSConfig()) == "" and resolv_content(None) == ""
    hosts = hosts_content("web", ["10.0.0.5", "fd00::5"])
    assert hosts.startswith("127.0.0.1\tlocalhost\n") and hosts.endswith("10.0.0.5\tweb\nfd00::5\tweb\n")


def test_records_round_trip_exactly() -> None:
    cfg = config(labels={"a": "b"}, annotations={"x": "y"}, linux=options(pid=api.CONTAINER))
    sb = Sandbox(
        id="abc", name=reservation_name(cfg.metadata), config=cfg, runtime_handler="runc", created_at=5,
        files_dir="/f", cgroup_driver="cgroupfs", cgroup_parent="/p", pins={"net": "/run/ns/net/abc"},
        infra=Infra(10, 20), ips=["10.0.0.2"],
    )
    again = Sandbox.from_dict(sb.to_dict())
    assert again == sb and again.config.labels == {"a": "b"}
    assert again.namespace_options.pid == api.CONTAINER and again.pid_namespace_path() == "/proc/10/ns/pid"
    assert again.namespace_path("net") == "/run/ns/net/abc" and again.namespace_path("ipc") is None
    assert sb.name == "p/n/u/0"


def userns_config(**security: object) -> api.PodSandboxConfig:
    ids = [api.IDMapping(container_id=0, host_id=65536, length=65536)]
    userns = api.NamespaceOption(userns_options=api.UserNamespace(mode=api.POD, uids=ids, gids=ids))
    return config(linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=userns,
                                                                                                  **security)))


def test_a_pod_user_namespace_is_pinned_first_and_its_ids_must_be_mapped() -> None:
    p = plan(userns_config(), "", Config(), "node1")
    assert p.own_namespaces == ("user", "net", "ipc", "uts") and p.pod_pid
    assert plan(userns_config(run_as_user=api.Int64Value(value=65535)), "", Config(), "node1").own_namespaces[0] == "user"
    with pytest.raises(InvalidArgument, match="run_as_user 65536 is not mapped"):
        plan(userns_config(run_as_user=api.Int64Value(value=65536)), "", Config(), "node1")
    with pytest.raises(InvalidArgument, match="run_as_group"):
        plan(userns_config(run_as_user=api.Int64Value(value=0), run_as_group=api.Int64Value(value=70000)), "", Config(), "node1")
    stored = Sandbox(id="s", name="n", config=userns_config(), runtime_handler="", created_at=1, files_dir="/x",
                     cgroup_driver="cgroupfs", cgroup_parent="/p")
    assert stored.id_mappings is not None and stored.id_mappings.root() == (65536, 65536)
    assert Sandbox.from_dict(stored.to_dict()).id_mappings == stored.id_mappings
