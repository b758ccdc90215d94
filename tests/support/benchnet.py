"""The pod networks scripts/bench puts both runtimes on: one chain for both, each on its own bridge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cri_shim.config import NetworkConfig
from cri_shim.network.conf import default_network

# Name -> the chain it runs, as the benchmark's report names it.
NETWORKS = {
    "embedded": "bridge (ipMasq) + portmap (+ firewall where FORWARD needs it)",
    "bridge": "bridge alone",
}


def bench_conflist(network: str, bridge: str, subnet: str, state_dir: Path, name: str,
                   firewall: bool = True) -> dict[str, Any]:
    """The network a benchmarked runtime's pods join, on the given bridge and subnet.

    "embedded" is cri-shim's shipped chain (bridge with masquerading, portmap, and firewall when
    `firewall`, as cri-shim decides it at start: cri_shim.network.forward);
    "bridge" is its bridge plugin alone, without masquerading: pods still get a veth, an address
    lease and a gateway, but the iptables work the chain does for both runtimes alike (about 170
    ms a pod cycle here) is left out, so the figures weigh mostly the runtimes' own work.
    """
    if network not in NETWORKS:
        raise ValueError(f"unknown benchmark network {network!r} (one of {', '.join(NETWORKS)})")
    conf = default_network(NetworkConfig(default_bridge=bridge, default_subnet=subnet), state_dir, firewall=firewall)
    conflist = {**conf.conflist, "name": name}
    if network == "bridge":
        conflist["plugins"] = [{**conflist["plugins"][0], "ipMasq": False}]
    return conflist


def install(conf_dir: Path, network: str, bridge: str, subnet: str, state_dir: Path, name: str,
            firewall: bool = True) -> None:
    """Writes the network into a runtime's CNI configuration directory, as its only file."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = bench_conflist(network, bridge, subnet, state_dir, name, firewall)
    (conf_dir / "10-bench.conflist").write_text(json.dumps(conflist, indent=2))
