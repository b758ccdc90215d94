"""The embedded network on real plugins and iptables: one node masquerade chain instead of one per
pod, and a StopPodSandbox that unpins the pod's network namespace before a DEL without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.pods import (
    VETH_SETTLE_SECONDS,
    bridge_ports,
    changes,
    pod_config,
    remove_pod,
    run_pod,
    snapshot,
    status,
    stop_pod,
    warm_up,
)

pytestmark = pytest.mark.integration

OUTSIDE_NODE, OUTSIDE_HOST, PORT = "192.0.2.1", "192.0.2.2", 18700

# Accepts connections and answers each with the address it came from.
PEER_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode())
    c.close()
"""

ASK = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as c:
    print(c.recv(100).decode())
"""


def nat(tool: str = "iptables") -> str:
    return subprocess.run([f"{tool}-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout


def masquerade_info(cri: Cri) -> dict[str, Any]:
    info = cri.runtime.Status(api.StatusRequest(verbose=True)).info
    return dict(json.loads(info["network"])["embeddedMasquerade"])


def echo_server(netns: str, address: str, port: int = PORT) -> subprocess.Popen[str]:
    """PEER_ECHO in a network namespace (a path, or a pid's), once it listens."""
    proc = subprocess.Popen(["nsenter", f"--net={netns}", "--", sys.executable, "-c", PEER_ECHO, address, str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def peer_seen(netns: str, address: str, port: int = PORT) -> str:
    """The source address the echo server at address saw for a connection from netns."""
    out = subprocess.run(["nsenter", f"--net={netns}", "--", sys.executable, "-c", ASK, address, str(port)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def outside() -> Iterator[str]:
    """A host outside the node: a network namespace of its own on a veth pair, OUTSIDE_HOST there
    and OUTSIDE_NODE here, with no route to any pod subnet (so it can answer only a masqueraded
    connection). Yields its namespace (a process's), where its echo server runs."""
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "600"])
    netns = f"/proc/{holder.pid}/ns/net"
    try:
        for _ in range(100):  # until unshare has made the namespace
            if os.readlink(netns) != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.02)
        subprocess.run(["ip", "link", "add", "out0", "type", "veth", "peer", "name", "out1", "netns", str(holder.pid)],
                       check=True)
        subprocess.run(["ip", "addr", "add", f"{OUTSIDE_NODE}/24", "dev", "out0"], check=True)
        subprocess.run(["ip", "link", "set", "out0", "up"], check=True)
        for cmd in (["ip", "addr", "add", f"{OUTSIDE_HOST}/24", "dev", "out1"], ["ip", "link", "set", "out1", "up"],
                    ["ip", "link", "set", "lo", "up"]):
            subprocess.run(["nsenter", f"--net={netns}", "--", *cmd], check=True)
        yield netns
    finally:
        holder.kill()
        holder.wait()
        subprocess.run(["ip", "link", "del", "out0"], check=False, capture_output=True)


def wait_no_ports(bridge: str) -> list[str]:
    """The bridge's ports once none is left, or those left after the bound (a veth the kernel
    never deleted is a leak, not slowness)."""
    deadline = time.monotonic() + VETH_SETTLE_SECONDS
    while bridge_ports(bridge) and time.monotonic() < deadline:
        time.sleep(0.05)
    return bridge_ports(bridge)


def test_pods_masquerade_through_one_node_chain_and_talk_to_each_other_unmasqueraded(
        cri: Cri, daemon: Daemon, outside: str) -> None:
    masq = masquerade_info(cri)
    assert masq["node"] is True and masq["subnets"] == ["10.88.0.0/16"], masq
    chain = masq["chain"]
    a, b = run_pod(cri, pod_config("egress-a")), run_pod(cri, pod_config("egress-b"))
    (sa, ia), (sb, ib) = status(cri, a), status(cri, b)
    rules = nat()
    assert rules.count(f":{chain} ") == 1 and rules.count(f"-j {chain}") == 1
    assert f"-A {chain} -s 10.88.0.0/16 -j MASQUERADE" in rules
    # The bridge plugin made no chain of its own for either pod: no rule names a pod's address.
    assert sa.network.ip not in rules and sb.network.ip not in rules
    server = echo_server(outside, OUTSIDE_HOST)
    pod_server = echo_server(ia["namespaces"]["net"], "0.0.0.0")
    try:
        assert peer_seen(ia["namespaces"]["net"], OUTSIDE_HOST) == OUTSIDE_NODE  # masqueraded to the node's address
        assert peer_seen(ib["namespaces"]["net"], sa.network.ip) == sb.network.ip  # pod to pod keeps its source
    finally:
        for proc in (server, pod_server):
            proc.kill()
            proc.wait()
    for sid in (a, b):
        remove_pod(cri, sid)


def test_the_node_chain_is_written_once_across_pod_cidrs_and_restarts(cri: Cri, daemon: Daemon) -> None:
    chain = masquerade_info(cri)["chain"]
    for cidr in ("10.211.0.0/24", "10.211.0.0/24", "10.212.0.0/24"):
        cri.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(
            runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr=cidr))))
    rules = nat()
    assert rules.count(f":{chain} ") == 1 and rules.count(f"-j {chain}") == 1
    for subnet in ("10.88.0.0/16", "10.211.0.0/24", "10.212.0.0/24"):  # pods on the old ones may still run
        assert rules.count(f"-A {chain} -s {subnet} -j MASQUERADE") == 1
    assert masquerade_info(cri)["subnets"] == ["10.211.0.0/24", "10.212.0.0/24", "10.88.0.0/16"]
    cri.close()
    daemon.restart()
    cri = Cri(daemon.endpoint)
    rules = nat()
    # After a restart no pod uses the pod CIDRs kubelet named before (it names its CIDR again).
    assert rules.count(f":{chain} ") == 1 and rules.count(f"-j {chain}") == 1
    assert "10.211.0.0/24" not in rules and "10.212.0.0/24" not in rules
    assert rules.count(f"-A {chain} -s 10.88.0.0/16 -j MASQUERADE") == 1
    cri.close()


def test_stop_unpins_the_netns_releases_the_lease_and_the_kernel_removes_the_veth(cri: Cri, daemon: Daemon) -> None:
    warm_up(cri)
    before = snapshot(daemon)
    ports = [api.PortMapping(container_port=80, host_port=18701)]
    sid = run_pod(cri, pod_config("teardown", port_mappings=ports))
    st, info = status(cri, sid)
    pin, ip = info["namespaces"]["net"], st.network.ip
    lease = Path(daemon.config["paths"]["state_dir"]) / "cni" / "ipam" / "cri-shim" / ip
    assert lease.exists() and os.path.ismount(pin) and "18701" in nat() and not info["netNamespaceClosed"]
    stop_pod(cri, sid)
    with open("/proc/self/mountinfo") as f:
        assert pin not in f.read()
    assert not os.path.exists(pin) and not lease.exists()
    assert "18701" not in nat() and ip not in nat() and ip not in subprocess.run(
        ["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert wait_no_ports("crishim0") == []
    # The pod still answers as containerd's does once its namespace is gone: no address, not ready.
    st, info = status(cri, sid)
    assert st.state == api.SANDBOX_NOTREADY and st.network.ip == "" and not st.network.additional_ips
    assert info["netNamespaceClosed"] is True and info["cniResult"] is None
    stop_pod(cri, sid)  # again: nothing left to release, no error
    remove_pod(cri, sid)
    remove_pod(cri, sid)
    assert changes(before, snapshot(daemon)) == {}


def test_a_hostile_pod_name_reaches_no_rule_and_bad_pod_cidrs_leave_none(cri: Cri, daemon: Daemon) -> None:
    warm_up(cri)
    chain = masquerade_info(cri)["chain"]
    node_rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S", chain], capture_output=True, text=True).stdout
    before = snapshot(daemon)
    hostile = "x -j ACCEPT -A POSTROUTING"
    sid = run_pod(cri, pod_config(hostile, uid="u -s 0.0.0.0 -j MASQUERADE"))
    assert subprocess.run(["iptables", "-w", "-t", "nat", "-S", chain], capture_output=True, text=True).stdout == node_rules
    assert "ACCEPT -A" not in nat() and "0.0.0.0 -j MASQUERADE" not in nat()
    remove_pod(cri, sid)
    for bad in ("10.88.0.0/16 -j ACCEPT", "10.213.0.0/24\n*filter\n-F", "0.0.0.0/0", "10.214.0.9/24",
                "10.215.0.0/24,10.216.0.0/24", "10.0.0.0/8," * 100, "224.0.0.0/4"):
        with pytest.raises(grpc.RpcError) as err:
            cri.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(
                runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr=bad))))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert masquerade_info(cri)["subnets"] == ["10.88.0.0/16"]
    assert changes(before, snapshot(daemon)) == {}
    # New pods still get the default subnet: no bad CIDR was taken.
    sid = run_pod(cri, pod_config("after-bad-cidrs"))
    assert status(cri, sid)[0].network.ip.startswith("10.88.")
    remove_pod(cri, sid)


class TestDualStack:
    """A dual-stack pod CIDR: an address of each family, the IPv6 subnet masqueraded by ip6tables."""

    @pytest.fixture
    def daemon_overrides(self) -> dict[str, Any]:
        return {"network": {"default_bridge": "dual0"}}  # the bridge plugin keeps a bridge's first subnets

    def test_pods_get_both_families_and_release_both(self, cri: Cri, daemon: Daemon) -> None:
        if not Path("/proc/net/if_inet6").exists():
            pytest.skip("no IPv6 in this kernel")
        cri.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(runtime_config=api.RuntimeConfig(
            network_config=api.NetworkConfig(pod_cidr="10.217.0.0/24,fd00:217::/64"))))
        chain = masquerade_info(cri)["chain"]
        assert f"-A {chain} -s fd00:217::/64 -j MASQUERADE" in nat("ip6tables")
        assert f"-A {chain} -s 10.217.0.0/24 -j MASQUERADE" in nat()
        sid = run_pod(cri, pod_config("dual"))
        st, _ = status(cri, sid)
        assert st.network.ip.startswith("10.217.0.") and [p.ip for p in st.network.additional_ips][0].startswith("fd00:217::")
        leases = Path(daemon.config["paths"]["state_dir"]) / "cni" / "ipam" / "cri-shim"
        held = {p.name for p in leases.iterdir()}
        assert st.network.ip in held and st.network.additional_ips[0].ip in held
        remove_pod(cri, sid)
        assert not {p.name for p in leases.iterdir()} & {st.network.ip, st.network.additional_ips[0].ip}
        assert wait_no_ports("dual0") == []
