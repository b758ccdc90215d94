"""Pod sandboxes on real namespaces, cgroups and CNI plugins: lifecycle, status, networking, files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.leftovers import infra_processes
from tests.support.pods import (
    http_get,
    in_pod,
    pod_config,
    remove_pod,
    run_pod,
    serve_http,
    snapshot,
    status,
    stop_pod,
    warm_up,
)

pytestmark = pytest.mark.integration

NODE_ADDRESS = "198.51.100.7"


@pytest.fixture
def node_address() -> Iterator[str]:
    """An address of the test's own network namespace, as a node's would be (on a veth pair)."""
    subprocess.run(["ip", "link", "add", "node0", "type", "veth", "peer", "name", "node1"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{NODE_ADDRESS}/24", "dev", "node0"], check=True)
        for link in ("node0", "node1"):
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        yield NODE_ADDRESS
    finally:
        subprocess.run(["ip", "link", "del", "node0"], check=False)


def test_run_status_list_stop_remove(cri: Cri) -> None:
    labels = {"io.kubernetes.pod.name": "web", "tier": "front"}
    annotations = {"a": "1", "long": "x" * 1000}
    sid = run_pod(cri, pod_config("web", labels=labels, annotations=annotations))
    st, info = status(cri, sid)
    assert st.state == api.SANDBOX_READY and st.id == sid and st.created_at > 0
    assert (st.metadata.name, st.metadata.namespace, st.metadata.uid) == ("web", "test-ns", "uid-web")
    assert dict(st.labels) == labels and dict(st.annotations) == annotations
    assert st.network.ip and st.network.ip == info["cniResult"]["ips"][0]["address"].split("/")[0]
    assert not st.linux.namespaces.options.HasField("userns_options")
    assert st.linux.namespaces.options.network == api.POD
    listed = cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items
    assert [i.id for i in listed] == [sid] and dict(listed[0].labels) == labels

    stop_pod(cri, sid)
    stop_pod(cri, sid)
    st, info = status(cri, sid)
    assert st.state == api.SANDBOX_NOTREADY and st.network.ip == "" and info["pid"] == 0
    remove_pod(cri, sid)
    remove_pod(cri, sid)
    assert cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    with pytest.raises(grpc.RpcError) as err:
        status(cri, sid)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_ids(cri: Cri) -> None:
    stop_pod(cri, "0123456789abcdef")
    remove_pod(cri, "0123456789abcdef")
    with pytest.raises(grpc.RpcError) as err:
        status(cri, "0123456789abcdef")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_filters(cri: Cri) -> None:
    a = run_pod(cri, pod_config("a", labels={"app": "x", "env": "prod"}))
    b = run_pod(cri, pod_config("b", labels={"app": "x", "env": "dev"}))
    stop_pod(cri, b)

    def ids(**f: object) -> set[str]:
        request = api.ListPodSandboxRequest(filter=api.PodSandboxFilter(**f))
        return {i.id for i in cri.runtime.ListPodSandbox(request).items}

    assert ids(id=a) == {a} and ids(id=b[:12]) == {b} and ids(id="nope") == set()
    assert ids(state=api.PodSandboxStateValue(state=api.SANDBOX_READY)) == {a}
    assert ids(state=api.PodSandboxStateValue(state=api.SANDBOX_NOTREADY)) == {b}
    assert ids(label_selector={"app": "x"}) == {a, b}
    assert ids(label_selector={"app": "x", "env": "dev"}) == {b}
    assert ids(label_selector={"app": "y"}) == set()
    assert ids(id=a, label_selector={"env": "dev"}) == set()
    for sid in (a, b):
        remove_pod(cri, sid)


def test_status_echoes_namespace_options_as_requested(cri: Cri) -> None:
    options = api.NamespaceOption(network=api.NODE, pid=api.CONTAINER, ipc=api.NODE)
    config = pod_config("host", linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=options)))
    sid = run_pod(cri, config)
    st, info = status(cri, sid)
    assert st.linux.namespaces.options == options
    assert st.network.ip == "" and info["namespaces"] == {} and info["pid"] == 0 and info["cniResult"] is None
    assert Path(info["files"], "hosts").read_bytes() == Path("/etc/hosts").read_bytes()
    assert info["shm"] == ""
    remove_pod(cri, sid)


def test_pod_namespaces_hostname_sysctls_and_files(cri: Cri, daemon: Daemon) -> None:
    dns = api.DNSConfig(servers=["10.10.10.10", "10.10.10.11"], searches=["google.com", "svc.local"], options=["ndots:8"])
    sysctls = {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100"}
    config = pod_config("files", hostname="my-pod", dns_config=dns, linux=api.LinuxPodSandboxConfig(sysctls=sysctls))
    sid = run_pod(cri, config)
    st, info = status(cri, sid)
    ns = info["namespaces"]
    assert set(ns) == {"net", "ipc", "uts", "pid"}
    assert all(os.stat(ns[k]).st_ino != os.stat(f"/proc/self/ns/{k}").st_ino for k in ("net", "ipc", "uts"))
    assert in_pod(info, "hostname", kinds=("uts",)).strip() == "my-pod"
    assert in_pod(info, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start", kinds=("net",)).strip() == "0"
    assert in_pod(info, "cat", "/proc/sys/kernel/shm_rmid_forced", kinds=("ipc",)).strip() == "1"
    assert in_pod(info, "cat", "/proc/sys/fs/mqueue/msg_max", kinds=("ipc",)).strip() == "100"
    assert Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip() == "1024"  # the host's is untouched
    assert "lo" in in_pod(info, "ip", "-o", "link", "show", "up", kinds=("net",))

    files = Path(info["files"])
    assert (files / "hostname").read_text() == "my-pod\n"
    assert (files / "resolv.conf").read_text() == (
        "search google.com svc.local\nnameserver 10.10.10.10\nnameserver 10.10.10.11\noptions ndots:8\n"
    )
    hosts = (files / "hosts").read_text()
    assert "127.0.0.1\tlocalhost\n" in hosts and f"{st.network.ip}\tmy-pod\n" in hosts
    shm = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines() if line.split()[4] == info["shm"]]
    assert len(shm) == 1 and shm[0][shm[0].index("-", 6) + 1] == "tmpfs"
    assert {"nosuid", "nodev", "noexec"} <= set(shm[0][5].split(",")) and "size=65536k" in shm[0][-1]
    remove_pod(cri, sid)


def test_no_dns_config_copies_the_hosts_resolv_conf(cri: Cri) -> None:
    sid = run_pod(cri, pod_config("nodns"))
    _, info = status(cri, sid)
    host = Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").exists() else b""
    assert Path(info["files"], "resolv.conf").read_bytes() == host
    remove_pod(cri, sid)


def test_pod_pid_namespace_infra_is_pid_1(cri: Cri, daemon: Daemon) -> None:
    sid = run_pod(cri, pod_config("pidpod"))
    _, info = status(cri, sid)
    pid = info["pid"]
    assert pid > 0 and pid in infra_processes(daemon)
    nspid = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("NSpid"))
    assert nspid.split()[-1] == "1"
    assert info["namespaces"]["pid"] == f"/proc/{pid}/ns/pid"
    assert os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
    for kind in ("net", "ipc", "uts"):
        assert os.stat(f"/proc/{pid}/ns/{kind}").st_ino == os.stat(info["namespaces"][kind]).st_ino
    memberships = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    assert memberships and all(line.endswith(":" + info["infraCgroupsPath"]) for line in memberships), memberships
    stop_pod(cri, sid)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    remove_pod(cri, sid)


@pytest.mark.parametrize("mode", [api.CONTAINER, api.NODE])
def test_container_and_node_pid_modes_need_no_infra(cri: Cri, daemon: Daemon, mode: int) -> None:
    options = api.NamespaceOption(pid=mode)
    sid = run_pod(cri, pod_config("nopid", linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=options))))
    _, info = status(cri, sid)
    assert info["pid"] == 0 and "pid" not in info["namespaces"] and infra_processes(daemon) == []
    remove_pod(cri, sid)


def test_pod_ip_reachable_from_host_and_from_another_pod(cri: Cri, daemon: Daemon) -> None:
    a = run_pod(cri, pod_config("server"))
    b = run_pod(cri, pod_config("client"))
    sa, ia = status(cri, a)
    sb, ib = status(cri, b)
    assert sa.network.ip != sb.network.ip
    server = serve_http(ia["namespaces"]["net"], 8080, daemon.dir / "www")
    try:
        assert http_get(sa.network.ip, 8080) == "hello from the pod\n"
        assert http_get(sa.network.ip, 8080, netns=ib["namespaces"]["net"]) == "hello from the pod\n"
    finally:
        server.kill()
        server.wait()
    for sid in (a, b):
        remove_pod(cri, sid)


def test_host_port_on_loopback_and_node_address(cri: Cri, daemon: Daemon, node_address: str) -> None:
    ports = [
        api.PortMapping(protocol=api.TCP, container_port=8080, host_port=18080),
        api.PortMapping(protocol=api.TCP, container_port=8080, host_port=18081, host_ip=node_address),
    ]
    sid = run_pod(cri, pod_config("ports", port_mappings=ports))
    _, info = status(cri, sid)
    server = serve_http(info["namespaces"]["net"], 8080, daemon.dir / "www")
    try:
        assert http_get("127.0.0.1", 18080) == "hello from the pod\n"
        assert http_get(node_address, 18080) == "hello from the pod\n"
        assert http_get(node_address, 18081) == "hello from the pod\n"
    finally:
        server.kill()
        server.wait()
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    assert "18081" in rules and node_address in rules
    remove_pod(cri, sid)
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    assert "18080" not in rules and "18081" not in rules


def test_no_leaks_after_50_cycles(cri: Cri, daemon: Daemon) -> None:
    config = pod_config(
        "cycle",
        hostname="cycle",
        port_mappings=[api.PortMapping(container_port=80, host_port=18090)],
        linux=api.LinuxPodSandboxConfig(sysctls={"net.ipv4.ip_unprivileged_port_start": "0"}),
    )
    warm_up(cri)
    before = snapshot(daemon)
    for attempt in range(50):
        config.metadata.attempt = attempt + 1
        sid = run_pod(cri, config)
        if attempt % 2:
            stop_pod(cri, sid)
        remove_pod(cri, sid)
    assert snapshot(daemon) == before


class TestPodCidr:
    """kubelet's UpdateRuntimeConfig names the node's pod CIDR: pods started after it get addresses there."""

    @pytest.fixture
    def daemon_overrides(self) -> dict[str, Any]:
        # A bridge of its own: the bridge plugin keeps the first subnet a bridge was given.
        return {"network": {"default_bridge": "cidr0"}}

    def test_pods_get_addresses_in_it(self, cri: Cri) -> None:
        cri.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(
            runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr="10.209.7.0/24"))))
        sid = run_pod(cri, pod_config("cidr"))
        st, _ = status(cri, sid)
        assert st.network.ip.startswith("10.209.7."), st.network.ip
        ready = {c.type: c.status for c in cri.runtime.Status(api.StatusRequest()).status.conditions}
        assert ready["NetworkReady"]
        stop_pod(cri, sid)
        remove_pod(cri, sid)
