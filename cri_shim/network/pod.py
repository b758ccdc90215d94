"""A pod's attachment to the cluster network: CNI ADD/DEL/CHECK for one sandbox, with its cache.

attach() records the network configuration and inputs before ADD, runs DEL itself when ADD
fails, and caches the result; detach() runs DEL with exactly what ADD used (from the cache),
so it works after a restart or a configuration change, and succeeds when there is nothing to
release (when ADD's result was never cached, the addresses on the pod's interface stand in
for it). A pod's interface is always eth0, as kubelet expects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from cri_shim.config import Config
from cri_shim.errors import InvalidArgument
from cri_shim.network import forward
from cri_shim.network.cache import AttachmentCache, CacheEntry
from cri_shim.network.cni import Attachment, CniError, CniExec, check_args, result_ips
from cri_shim.network.conf import NetworkConf, NetworkConfError, find_network

log = logging.getLogger("cri_shim.network")

POD_IFNAME = "eth0"


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

    async def open(self) -> None:
        """Start-up: decides whether the embedded network needs its firewall plugin."""
        self.firewall = await asyncio.to_thread(forward.decide)
        log.info("embedded network firewall plugin", extra={"needed": self.firewall.needed, "reason": self.firewall.reason})

    def current(self) -> NetworkConf:
        """The network new pods join."""
        return find_network(self.cfg.network, self.cfg.state_dir, self._pod_cidr, self.firewall.needed)

    def set_pod_cidr(self, cidr: str) -> None:
        """Takes kubelet's pod CIDR ("v4cidr" or dual-stack "v4cidr,v6cidr") for pods started
        from now on; one that does not parse is refused here rather than failing every later pod."""
        for part in cidr.split(","):
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise InvalidArgument(f"pod_cidr {cidr!r}: {part!r} is not a CIDR") from None
        self._pod_cidr = cidr

    async def attach(self, sandbox_id: str, netns: str, pod: PodRef, ports: list[PortMapping]) -> list[str]:
        """CNI ADD for the sandbox; its IPs (IPv4 first). On failure nothing is left attached."""
        try:
            conf = self.current()
        except NetworkConfError as exc:
            raise CniError(f"no usable CNI network: {exc}") from exc
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

    async def detach(self, sandbox_id: str) -> None:
        """CNI DEL with the cached configuration, then forgets it; nothing cached means nothing to do."""
        entry = self.cache.load(sandbox_id)
        if entry is None:
            await self.cache.remove(sandbox_id)
            return
        result = entry.result
        if result is None:
            # ADD may have finished with its result unsaved (a crash): plugins such as firewall need
            # the pod's addresses to undo their rules, so they are read from its interface.
            result = await observed_result(entry.attachment, entry.conflist.get("cniVersion", "1.0.0"))
        await self.exec.delete(entry.conflist, entry.attachment, result)
        await self.cache.remove(sandbox_id)
        log.info("pod network detached", extra={"sandbox": sandbox_id})

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
