"""A pod's attachment to the cluster network: CNI ADD/DEL/CHECK for one sandbox, with its cache.

attach() records the network configuration and inputs before ADD, runs DEL itself when ADD
fails, and caches the result; detach() runs DEL with exactly what ADD used (from the cache),
so it works after a restart or a configuration change, and succeeds when there is nothing to
release (when ADD's result was never cached, the addresses on the pod's interface stand in
for it). A pod's interface is always eth0, as kubelet expects.

DEL without the namespace: where every plugin of the cached chain releases what it made
without the pod's network namespace (releases_without_netns), detach() has the namespace
unpinned first and runs DEL with CNI_NETNS empty, as the CNI spec allows for DEL. The kernel
then deletes the pod's veth pair with the namespace, in its own cleanup work once the pod's last
process is gone, instead of DEL deleting it and waiting (about 30 ms here); the bridge plugin
only releases the address lease. Any other chain (an operator's plugins, the bridge with its own
ipMasq, as attachments made before the node's masquerade chain are cached) keeps the order the
plugins expect: DEL in the namespace, the namespace removed after.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cri_shim.config import Config
from cri_shim.errors import InvalidArgument, Unavailable
from cri_shim.network import forward, subnets
from cri_shim.network.cache import AttachmentCache, CacheEntry
from cri_shim.network.cni import Attachment, CniError, CniExec, check_args, result_ips
from cri_shim.network.conf import (
    EMBEDDED_SOURCE,
    NetworkConf,
    NetworkConfError,
    embedded_subnets,
    find_network,
    uses_node_masquerade,
)
from cri_shim.network.masquerade import MasqueradeError, NodeMasquerade
from cri_shim.network.subnets import Subnet

log = logging.getLogger("cri_shim.network")

POD_IFNAME = "eth0"

# Plugins whose DEL releases everything they made without the pod's network namespace: portmap
# and firewall remove rules named by the container id and the cached result's addresses.
NETNS_FREE_PLUGINS = ("portmap", "firewall")


def releases_without_netns(conflist: dict[str, Any]) -> bool:
    """Whether every plugin of a (cached) chain releases what it made on a DEL without the pod's
    network namespace. The bridge plugin does only without ipMasq and macspoofchk (it finds the
    addresses of its per-pod masquerade rules through the namespace, and skips both on an empty
    CNI_NETNS) and with host-local addresses (released by container id). Anything else is
    assumed to need the namespace."""
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        return False
    for plugin in plugins:
        if not isinstance(plugin, dict):
            return False
        kind = plugin.get("type")
        if kind in NETNS_FREE_PLUGINS:
            continue
        ipam = plugin.get("ipam")
        if (kind == "bridge" and plugin.get("ipMasq") in (None, False) and plugin.get("macspoofchk") in (None, False)
                and isinstance(ipam, dict) and ipam.get("type") == "host-local"):
            continue
        return False
    return True


@dataclass(frozen=True)
class PortMapping:
    """A hostPort mapping as the portMappings capability carries it."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def capability(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"hostPort": self.host_port, "containerPort": self.container_port, "protocol": self.protocol}
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


@dataclass(frozen=True)
class PodRef:
    """Who the pod is, for CNI_ARGS (K8S_POD_*), as kubelet's network plugins expect them."""

    name: str
    namespace: str
    uid: str


class PodNetwork:
    """CNI for pods, on the network conf_dir names (or the embedded default)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        # The node's pod CIDR from kubelet's UpdateRuntimeConfig: the embedded network's subnet.
        self._pod_cidr: str | None = None
        self.cache = AttachmentCache(cfg.state_dir / "cni" / "cache")
        self.exec = CniExec(cfg.network.bin_dirs, float(cfg.network.plugin_timeout_seconds))
        # Whether the embedded network carries the firewall plugin: kept until open() decides.
        self.firewall = forward.FirewallDecision(True, "not decided yet")
        # The node's masquerade chain for the embedded bridge: inactive until open() installs it.
        self.masquerade = NodeMasquerade(cfg.network.default_bridge)

    async def open(self) -> None:
        """Start-up: decides whether the embedded network needs its firewall plugin, and installs
        the node's masquerade chain for the subnets that need it (see _masqueraded_subnets)."""
        self.firewall, _ = await asyncio.gather(asyncio.to_thread(forward.decide),
                                                self.masquerade.start(self._masqueraded_subnets()))
        log.info("embedded network firewall plugin", extra={"needed": self.firewall.needed, "reason": self.firewall.reason})
        state = self.masquerade.state()
        log.info("embedded network masquerade", extra={"node": state.node, "reason": state.reason, "chain": state.chain,
                                                       "subnets": list(state.subnets)})

    def _masqueraded_subnets(self) -> set[Subnet]:
        """The subnets the node chain must hold at start-up: the embedded network's, when it is the
        one new pods join, and those of every cached attachment relying on the chain (an old pod
        CIDR is dropped once no pod uses it)."""
        wanted: set[Subnet] = set()
        try:
            conf = self.current()
        except NetworkConfError:
            conf = None
        if conf is not None and conf.source == EMBEDDED_SOURCE:
            wanted.update(embedded_subnets(conf.conflist))
        bridge = self.cfg.network.default_bridge
        for sandbox_id in self.cache.ids():
            entry = self.cache.load(sandbox_id)
            if entry is not None and uses_node_masquerade(entry.conflist, entry.source, bridge):
                wanted.update(embedded_subnets(entry.conflist))
        return wanted

    def current(self) -> NetworkConf:
        """The network new pods join."""
        return find_network(self.cfg.network, self.cfg.state_dir, self._pod_cidr, self.firewall.needed,
                            self.masquerade.active)

    async def set_pod_cidr(self, cidr: str) -> None:
        """Takes kubelet's pod CIDR ("cidr", or dual-stack "v4cidr,v6cidr") for pods started from
        now on. One that does not parse (cri_shim.network.subnets) is InvalidArgument here rather
        than failing every later pod; when the embedded network is in use, the node chain gets
        its subnets first (Unavailable, the CIDR not taken, when it cannot: kubelet retries)."""
        try:
            parsed = subnets.parse(cidr)
        except ValueError as exc:
            raise InvalidArgument(f"pod_cidr {cidr[:128]!r}: {exc}") from None
        try:
            embedded = self.current().source == EMBEDDED_SOURCE
        except NetworkConfError:
            embedded = False
        if embedded:
            try:
                await self.masquerade.ensure(parsed)
            except MasqueradeError as exc:
                raise Unavailable(f"pod_cidr {cidr!r}: the node's masquerade rules could not be installed: {exc}") from None
        self._pod_cidr = ",".join(str(s) for s in parsed)

    async def attach(self, sandbox_id: str, netns: str, pod: PodRef, ports: list[PortMapping]) -> list[str]:
        """CNI ADD for the sandbox; its IPs (IPv4 first). On failure nothing is left attached."""
        try:
            conf = self.current()
        except NetworkConfError as exc:
            raise CniError(f"no usable CNI network: {exc}") from exc
        if uses_node_masquerade(conf.conflist, conf.source, self.cfg.network.default_bridge):
            try:  # a no-op once installed; installs what the embedded network needs when it came into use later
                await self.masquerade.ensure(embedded_subnets(conf.conflist))
            except MasqueradeError as exc:
                raise CniError(f"the node's masquerade rules could not be installed: {exc}") from exc
        args = (
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", pod.namespace),
            ("K8S_POD_NAME", pod.name),
            ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
            ("K8S_POD_UID", pod.uid),
        )
        check_args(args)
        capabilities: dict[str, Any] = {}
        if ports:
            capabilities["portMappings"] = [p.capability() for p in ports]
        att = Attachment(container_id=sandbox_id, netns=netns, ifname=POD_IFNAME, args=args, capabilities=capabilities)
        entry = CacheEntry(conflist=conf.conflist, source=conf.source, attachment=att)
        await self.cache.save(sandbox_id, entry)  # before ADD: a crash during ADD still knows what to DEL
        try:
            entry.result = await self.exec.add(conf.conflist, att)
        except BaseException as exc:
            log.warning("cni add failed, deleting", extra={"sandbox": sandbox_id, "error": str(exc)})
            try:
                await self.detach(sandbox_id)
            except CniError as cleanup:
                log.error("cni del after failed add failed", extra={"sandbox": sandbox_id, "error": str(cleanup)})
            raise
        await self.cache.save(sandbox_id, entry)
        ips = result_ips(entry.result)
        log.info("pod network attached", extra={"sandbox": sandbox_id, "network": conf.name, "ips": ips})
        return ips

    async def detach(self, sandbox_id: str, drop_netns: Callable[[], Awaitable[None]] | None = None) -> None:
        """CNI DEL with the cached configuration, then forgets it; nothing cached means nothing to do.

        When the cached chain releases everything without the pod's network namespace and ADD's
        result is cached, drop_netns (the caller's removal of the namespace) runs first and DEL
        runs with CNI_NETNS empty; otherwise DEL runs in the namespace and drop_netns is not called.
        """
        entry = self.cache.load(sandbox_id)
        if entry is None:
            await self.cache.remove(sandbox_id)
            return
        result, att = entry.result, entry.attachment
        if result is not None and releases_without_netns(entry.conflist):
            if drop_netns is not None:
                await drop_netns()
            att = dataclasses.replace(att, netns="")
        elif result is None:
            # ADD may have finished with its result unsaved (a crash): plugins such as firewall need
            # the pod's addresses to undo their rules, so they are read from its interface.
            result = await observed_result(att, entry.conflist.get("cniVersion", "1.0.0"))
        await self.exec.delete(entry.conflist, att, result)
        await self.cache.remove(sandbox_id)
        log.info("pod network detached", extra={"sandbox": sandbox_id, "netns": bool(att.netns)})

    async def check(self, sandbox_id: str) -> None:
        """CNI CHECK of a finished attachment (CniError when it is broken or absent)."""
        entry = self.cache.load(sandbox_id)
        if entry is None or entry.result is None:
            raise CniError(f"sandbox {sandbox_id} has no network attachment")
        await self.exec.check(entry.conflist, entry.attachment, entry.result)

    def cached_result(self, sandbox_id: str) -> dict[str, Any] | None:
        """The cached ADD result, or None."""
        entry = self.cache.load(sandbox_id)
        return entry.result if entry else None

    async def sweep(self, known: set[str]) -> None:
        """Detaches cached attachments that no sandbox record owns (left by a crash or a torn record)."""
        for sandbox_id in self.cache.ids():
            if sandbox_id not in known:
                log.warning("releasing orphaned pod network", extra={"sandbox": sandbox_id})
                try:
                    await self.detach(sandbox_id)
                except CniError as exc:
                    log.error("orphaned pod network not released", extra={"sandbox": sandbox_id, "error": str(exc)})


async def observed_result(att: Attachment, version: str) -> dict[str, Any] | None:
    """A CNI result made from the global addresses on the pod's interface, or None when the
    namespace or interface is gone or has none."""
    if not os.path.exists(att.netns):
        return None
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={att.netns}", "--", "ip", "-j", "addr", "show", "dev", att.ifname,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return None
    try:
        ips = [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link.get("addr_info", [])
               if a.get("scope") == "global"]
    except (ValueError, KeyError, TypeError):
        return None
    if not ips:
        return None
    return {
        "cniVersion": version,
        "interfaces": [{"name": att.ifname, "sandbox": att.netns}],
        "ips": [{"address": ip, "interface": 0} for ip in ips],
    }
