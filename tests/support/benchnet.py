"""The pod networks scripts/bench runs the runtimes on, each runtime on a bridge and subnet of its own.

- "embedded": what an operator gets by default. cri-shim runs its embedded default chain itself
  (its conf_dir empty: whatever that chain is today, the benchmark reads it back from cri-shim);
  containerd gets the standard equivalent conflist an operator would write for it: bridge with
  masquerading (ipMasq) + host-local + portmap, + firewall where the host's FORWARD chain needs
  it, as cri-shim decides that for its own chain at start (cri_shim.network.forward).
- "bridge": one file for both, bridge without masquerading + host-local + portmap: the chain the
  speed issue compares on, whose iptables work is small and the same for both runtimes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Name -> what it runs, as the benchmark's report names it.
NETWORKS = {
    "embedded": "cri-shim's embedded default (empty conf_dir) against containerd on bridge (ipMasq) + portmap "
                "(+ firewall where FORWARD needs it)",
    "bridge": "bridge (no ipMasq) + portmap, the same conflist for both",
}
CONF_FILE = "10-bench.conflist"
CNI_VERSION = "1.0.0"


def chain(bridge: str, subnet: str, ipam_dir: Path, name: str, masquerade: bool, firewall: bool) -> dict[str, Any]:
    """A bridge + host-local + portmap (+ firewall) conflist, as operators write for containerd
    (its own example network is this chain): pods get a veth on `bridge`, a lease from `subnet`
    kept under ipam_dir, the bridge as gateway, and hostPort mappings."""
    plugins: list[dict[str, Any]] = [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": masquerade, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": str(ipam_dir)}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ]
    if firewall:
        plugins.append({"type": "firewall"})
    return {"cniVersion": CNI_VERSION, "name": name, "plugins": plugins}


def bench_conflist(network: str, bridge: str, subnet: str, ipam_dir: Path, name: str,
                   firewall: bool = True) -> dict[str, Any]:
    """The conflist a runtime given a file gets on that network: with masquerading and firewall
    (when `firewall`) on "embedded", without either on "bridge"."""
    if network not in NETWORKS:
        raise ValueError(f"unknown benchmark network {network!r} (one of {', '.join(NETWORKS)})")
    embedded = network == "embedded"
    return chain(bridge, subnet, ipam_dir, name, masquerade=embedded, firewall=embedded and firewall)


def install(conf_dir: Path, network: str, bridge: str, subnet: str, ipam_dir: Path, name: str,
            firewall: bool = True) -> None:
    """Writes the network into a runtime's CNI configuration directory, as its only file."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = bench_conflist(network, bridge, subnet, ipam_dir, name, firewall)
    (conf_dir / CONF_FILE).write_text(json.dumps(conflist, indent=2))


def installed(conf_dir: Path) -> dict[str, Any]:
    """The conflist install() wrote there."""
    return json.loads((conf_dir / CONF_FILE).read_text())


def describe(conflist: dict[str, Any]) -> str:
    """The plugin chain in one line, for the report: "bridge (ipMasq, host-local) + portmap + firewall"."""
    parts = []
    for plugin in conflist["plugins"]:
        kind = plugin["type"]
        if kind == "bridge":
            ipam = plugin.get("ipam", {}).get("type", "no ipam")
            kind += f" ({'ipMasq' if plugin.get('ipMasq') else 'no ipMasq'}, {ipam})"
        parts.append(kind)
    return " + ".join(parts)
