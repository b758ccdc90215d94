"""Pod egress masquerade for the embedded network: one nat chain for the node instead of one per pod.

The bridge plugin's ipMasq makes a nat chain for every pod (traffic to the pod's subnet
accepted, everything else but multicast masqueraded, jumped to from POSTROUTING by the pod's
address): iptables commits on every ADD and DEL, and a DEL that needs the pod's network
namespace to find that address. Instead cri-shim keeps one chain per embedded bridge,
CRI-SHIM-MASQ-<hash of the bridge name> (two daemons on one node have two bridges), jumped to
from POSTROUTING, with the same meaning per subnet: from the subnet to the subnet or to
multicast RETURN (not masqueraded), from the subnet to anywhere else MASQUERADE.

The chain is written whole by one `iptables-restore --noflush` (declaring a chain there flushes
it: one atomic commit, never a duplicated rule), `ip6tables-restore` for IPv6 subnets, and the
jump is appended only when `-C` does not find it. The rules are built from the configuration
and kubelet's pod CIDR alone (cri_shim.network.subnets checks both), never from what a pod names.

Which subnets: at start-up, the embedded network's subnets and those of every pod whose cached
attachment relies on the chain (the embedded network on the same bridge, ipMasq off); an old
pod CIDR no pod uses any more goes then. While running, a new pod CIDR's subnets are added and
none taken out: pods on the old ones may still run. Where the chain cannot be installed at
start-up (no iptables, or it fails) the embedded network keeps the bridge plugin's own ipMasq:
decided once, logged and shown in verbose Status.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from cri_shim.network.subnets import Subnet

CHAIN_PREFIX = "CRI-SHIM-MASQ-"
JUMP_COMMENT = "cri-shim-pod-egress"
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
TOOLS = {4: "iptables", 6: "ip6tables"}
TIMEOUT = 10.0


class MasqueradeError(Exception):
    """The node's masquerade rules could not be written; the message names the tool and why."""


@dataclass(frozen=True)
class MasqueradeState:
    """What verbose Status shows: whether the node chain stands in for per-pod ipMasq, and why."""

    node: bool
    reason: str
    chain: str
    subnets: tuple[str, ...]


def chain_name(bridge: str) -> str:
    """The node chain of an embedded bridge (an iptables chain name holds at most 28 characters)."""
    return CHAIN_PREFIX + hashlib.sha256(bridge.encode()).hexdigest()[:8].upper()


def restore_text(chain: str, subnets: Iterable[Subnet], version: int) -> str:
    """The iptables-restore input that makes the chain hold exactly the rules for these subnets
    (those of the given IP version): pod-to-pod and multicast traffic keeps its source, the rest
    is masqueraded."""
    lines = ["*nat", f":{chain} - [0:0]"]
    for subnet in sorted((s for s in subnets if s.version == version), key=str):
        lines += [
            f"-A {chain} -s {subnet} -d {subnet} -j RETURN",
            f"-A {chain} -s {subnet} -d {MULTICAST[version]} -j RETURN",
            f"-A {chain} -s {subnet} -j MASQUERADE",
        ]
    return "\n".join([*lines, "COMMIT", ""])


def jump_rule(chain: str) -> list[str]:
    """POSTROUTING's jump to the chain, as iptables arguments after -C/-A."""
    return ["POSTROUTING", "-m", "comment", "--comment", JUMP_COMMENT, "-j", chain]


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MasqueradeError(f"{argv[0]}: {exc}") from None


def install(chain: str, subnets: Iterable[Subnet], version: int) -> None:
    """Writes the chain of one IP version and makes sure POSTROUTING jumps to it (blocking)."""
    tool = TOOLS[version]
    restore, iptables = shutil.which(f"{tool}-restore"), shutil.which(tool)
    if restore is None or iptables is None:
        raise MasqueradeError(f"{tool} or {tool}-restore not found")
    done = _run([restore, "-w", "--noflush"], restore_text(chain, subnets, version))
    if done.returncode != 0:
        raise MasqueradeError(f"{tool}-restore failed: {done.stderr.strip()[:300]}")
    if _run([iptables, "-w", "-t", "nat", "-C", *jump_rule(chain)]).returncode == 0:
        return
    done = _run([iptables, "-w", "-t", "nat", "-A", *jump_rule(chain)])
    if done.returncode != 0:
        raise MasqueradeError(f"{tool} -A POSTROUTING failed: {done.stderr.strip()[:300]}")


class NodeMasquerade:
    """The node chain of one embedded bridge and the subnets it holds."""

    def __init__(self, bridge: str) -> None:
        self.chain = chain_name(bridge)
        self.active = False
        self.reason = "not decided yet"
        self._subnets: frozenset[Subnet] = frozenset()
        self._lock = asyncio.Lock()

    async def start(self, subnets: Iterable[Subnet]) -> None:
        """Start-up: writes the chains with exactly these subnets, dropping stale ones, and decides
        whether the node chain stands in for per-pod ipMasq. The IPv4 chain is always written (it
        decides); the IPv6 one too, but its failure counts only when an IPv6 subnet needs it."""
        wanted = frozenset(subnets)
        try:
            await asyncio.to_thread(install, self.chain, wanted, 4)
            try:
                await asyncio.to_thread(install, self.chain, wanted, 6)
            except MasqueradeError:
                if any(s.version == 6 for s in wanted):
                    raise
        except MasqueradeError as exc:
            self.active, self.reason = False, f"node rules not installed, pods masquerade themselves: {exc}"
            return
        self._subnets = wanted
        self.active, self.reason = True, "node chain installed"

    async def ensure(self, subnets: Iterable[Subnet]) -> None:
        """Adds subnets to the chains (once the node chain is in use); MasqueradeError when they
        cannot be (they count as missing, so the next call writes them again)."""
        wanted = frozenset(subnets)
        if not self.active or wanted <= self._subnets:
            return
        async with self._lock:
            missing = wanted - self._subnets
            if not missing:
                return
            merged = self._subnets | missing
            for version in sorted({s.version for s in missing}):
                await asyncio.to_thread(install, self.chain, merged, version)
            self._subnets = merged

    def state(self) -> MasqueradeState:
        return MasqueradeState(self.active, self.reason, self.chain, tuple(sorted(str(s) for s in self._subnets)))
