"""Finding the CNI network to use: the first configuration in conf_dir, or the embedded default.

Files are taken in lexical order, as libcni does (.conflist, and single-plugin .conf/.json
wrapped into a list). When the directory holds none, the shipped bridge + host-local +
portmap (+ firewall, where the host needs it) network is used, with the bridge name and subnets
from the configuration (or the pod CIDR kubelet sends through UpdateRuntimeConfig: one
host-local range per subnet, so a dual-stack pod gets an address of each family), its
host-local address leases kept under the runtime's state directory rather than the host-wide
/var/lib/cni, and the bridge's own ipMasq off where the node's masquerade chain stands in for it
(cri_shim.network.masquerade).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cri_shim.config import NetworkConfig
from cri_shim.network import subnets
from cri_shim.network.subnets import Subnet

# NetworkConf.source of the embedded network (the others name their file).
EMBEDDED_SOURCE = "embedded default"


@dataclass(frozen=True)
class NetworkConf:
    """One CNI network: its name, the parsed conflist and where it came from."""

    name: str
    conflist: dict[str, Any]
    source: str

    @property
    def plugin_types(self) -> list[str]:
        return [p["type"] for p in self.conflist["plugins"]]


class NetworkConfError(ValueError):
    """A configuration file is unreadable or not a valid CNI network."""


def _parse(path: Path) -> NetworkConf:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NetworkConfError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise NetworkConfError(f"{path}: not a JSON object")
    if "plugins" not in data:  # a single-plugin .conf
        plugin = {k: v for k, v in data.items() if k not in ("cniVersion", "name")}
        data = {"cniVersion": data.get("cniVersion", "0.4.0"), "name": data.get("name", ""), "plugins": [plugin]}
    if not data.get("name") or not isinstance(data.get("plugins"), list) or not data["plugins"]:
        raise NetworkConfError(f"{path}: a network needs a name and at least one plugin")
    if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in data["plugins"]):
        raise NetworkConfError(f"{path}: every plugin needs a type")
    return NetworkConf(name=data["name"], conflist=data, source=str(path))


# The default route host-local gives pods of each IP version.
DEFAULT_ROUTES = {4: "0.0.0.0/0", 6: "::/0"}


def ipam_dir(state_dir: Path) -> Path:
    """Where the embedded network's host-local IPAM keeps its leases."""
    return state_dir / "cni" / "ipam"


def default_network(cfg: NetworkConfig, state_dir: Path, subnet: str | None = None, firewall: bool = True,
                    node_masquerade: bool = False) -> NetworkConf:
    """The embedded bridge network, on the pod CIDR when kubelet gave one (else
    network.default_subnet); without its firewall plugin where the host's FORWARD chain does not
    need it (cri_shim.network.forward), and without the bridge's per-pod masquerade where the
    node's chain does it (node_masquerade)."""
    text = subnet or cfg.default_subnet
    try:
        ranges = subnets.parse(text)
    except ValueError as exc:
        raise NetworkConfError(f"embedded network subnet {text[:64]!r}: {exc}") from None
    conflist = json.loads(resources.files("cri_shim").joinpath("data/default-network.conflist").read_text())
    if not firewall:
        conflist["plugins"] = [p for p in conflist["plugins"] if p["type"] != "firewall"]
    bridge = conflist["plugins"][0]
    bridge["bridge"] = cfg.default_bridge
    bridge["ipMasq"] = not node_masquerade
    bridge["ipam"]["ranges"] = [[{"subnet": str(r)}] for r in ranges]
    bridge["ipam"]["routes"] = [{"dst": DEFAULT_ROUTES[v]} for v in sorted({r.version for r in ranges})]
    bridge["ipam"]["dataDir"] = str(ipam_dir(state_dir))
    return NetworkConf(name=conflist["name"], conflist=conflist, source=EMBEDDED_SOURCE)


def embedded_subnets(conflist: dict[str, Any]) -> list[Subnet]:
    """The subnets of an embedded network's host-local ranges (as cached: unreadable ones are skipped)."""
    found = []
    ranges = conflist.get("plugins", [{}])[0].get("ipam", {}).get("ranges", [])
    for range_set in ranges if isinstance(ranges, list) else []:
        for r in range_set if isinstance(range_set, list) else []:
            try:
                found.append(ipaddress.ip_network(r["subnet"]))
            except (ValueError, KeyError, TypeError):
                continue
    return found


def uses_node_masquerade(conflist: dict[str, Any], source: str, bridge: str) -> bool:
    """Whether pods attached with this (cached) network rely on the node chain of the bridge: the
    embedded network on that bridge with the bridge plugin's own ipMasq off."""
    plugins = conflist.get("plugins") or [{}]
    first = plugins[0] if isinstance(plugins[0], dict) else {}
    return source == EMBEDDED_SOURCE and first.get("bridge") == bridge and first.get("ipMasq") is False


def find_network(cfg: NetworkConfig, state_dir: Path, pod_cidr: str | None = None, firewall: bool = True,
                 node_masquerade: bool = False) -> NetworkConf:
    """The network pods join: the named (or first) file in conf_dir, else the embedded default
    (with its firewall plugin or not, masquerading by the node's chain or by its own)."""
    conf_dir = Path(cfg.conf_dir)
    files = sorted(p for p in conf_dir.glob("*") if p.suffix in (".conflist", ".conf", ".json")) if conf_dir.is_dir() else []
    errors = []
    for path in files:
        try:
            conf = _parse(path)
        except NetworkConfError as exc:
            errors.append(str(exc))
            continue
        if not cfg.network or conf.name == cfg.network:
            return conf
    if cfg.network:
        raise NetworkConfError(f"network {cfg.network!r} not found in {conf_dir} {'; '.join(errors)}".rstrip())
    return default_network(cfg, state_dir, pod_cidr, firewall, node_masquerade)


def find_plugin(cfg: NetworkConfig, plugin_type: str) -> Path | None:
    """The plugin binary for a type, from the first bin dir that has it."""
    for d in cfg.bin_dirs:
        candidate = Path(d) / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_plugins(cfg: NetworkConfig, conf: NetworkConf) -> list[str]:
    """Plugin types of the network with no binary in any bin dir (plus loopback, always used)."""
    return [t for t in ["loopback", *conf.plugin_types] if find_plugin(cfg, t) is None]
