"""Finding the CNI network to use: the first configuration in conf_dir, or the embedded default.

Files are taken in lexical order, as libcni does (.conflist, and single-plugin .conf/.json
wrapped into a list). When the directory holds none, the shipped bridge + host-local +
portmap (+ firewall, where the host needs it) network is used, with the bridge name and subnet from the configuration (or the pod
CIDR kubelet sends through UpdateRuntimeConfig), and its host-local address leases kept under
the runtime's state directory rather than the host-wide /var/lib/cni.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cri_shim.config import NetworkConfig


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


def ipam_dir(state_dir: Path) -> Path:
    """Where the embedded network's host-local IPAM keeps its leases."""
    return state_dir / "cni" / "ipam"


def default_network(cfg: NetworkConfig, state_dir: Path, subnet: str | None = None, firewall: bool = True) -> NetworkConf:
    """The embedded bridge network, on the pod CIDR when kubelet gave one; without its firewall
    plugin where the host's FORWARD chain does not need it (cri_shim.network.forward)."""
    conflist = json.loads(resources.files("cri_shim").joinpath("data/default-network.conflist").read_text())
    if not firewall:
        conflist["plugins"] = [p for p in conflist["plugins"] if p["type"] != "firewall"]
    bridge = conflist["plugins"][0]
    bridge["bridge"] = cfg.default_bridge
    bridge["ipam"]["ranges"] = [[{"subnet": subnet or cfg.default_subnet}]]
    bridge["ipam"]["dataDir"] = str(ipam_dir(state_dir))
    return NetworkConf(name=conflist["name"], conflist=conflist, source="embedded default")


def find_network(cfg: NetworkConfig, state_dir: Path, pod_cidr: str | None = None, firewall: bool = True) -> NetworkConf:
    """The network pods join: the named (or first) file in conf_dir, else the embedded default
    (with its firewall plugin or not)."""
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
    return default_network(cfg, state_dir, pod_cidr, firewall)


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
