"""Whether the embedded network needs the CNI firewall plugin, decided once at start-up.

The firewall plugin accepts the pods' forwarded traffic in the host's FORWARD chain, which
matters where that chain would drop it: a DROP policy (Docker sets one, as do hardened hosts) or
rules of its own that may drop or reject. Where the chain accepts everything (policy ACCEPT and
no rule but the plugin's own jump) its rules change nothing, yet it costs an iptables commit on
every pod's CNI ADD and DEL (about 23 and 35 ms here). So the embedded chain carries it only
where FORWARD needs it, for IPv4 or IPv6 alike; when the chain cannot be read it is kept.
A pod's CNI DEL runs with the network configuration its ADD used (the attachment cache), so a
decision that differs after a restart never leaves a pod's rules behind.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

# The jump the firewall plugin adds to FORWARD (its chain holds only ACCEPT rules).
PLUGIN_JUMP = "-j CNI-FORWARD"
LIST_TIMEOUT = 10.0


@dataclass(frozen=True)
class FirewallDecision:
    needed: bool
    reason: str


def _chain_needs_it(tool: str, rules: str) -> str:
    """Why FORWARD as `<tool> -S FORWARD` printed it may drop forwarded traffic ("" when it cannot)."""
    for line in rules.splitlines():
        if line.startswith("-P FORWARD") and line.split()[-1] != "ACCEPT":
            return f"{tool}: FORWARD policy is {line.split()[-1]}"
        if line.startswith("-A FORWARD") and PLUGIN_JUMP not in line:
            return f"{tool}: FORWARD has rules of its own ({line[:120]})"
    return ""


def decide(tools: tuple[str, ...] = ("iptables", "ip6tables")) -> FirewallDecision:
    """Whether the host's FORWARD chains need the firewall plugin (blocking: a thread's work)."""
    for tool in tools:
        binary = shutil.which(tool)
        if binary is None:
            continue
        try:
            done = subprocess.run([binary, "-w", "-S", "FORWARD"], capture_output=True, text=True, timeout=LIST_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return FirewallDecision(True, f"{tool} -S FORWARD failed: {exc}")
        if done.returncode != 0:
            return FirewallDecision(True, f"{tool} -S FORWARD failed: {done.stderr.strip()[:200]}")
        why = _chain_needs_it(tool, done.stdout)
        if why:
            return FirewallDecision(True, why)
    return FirewallDecision(False, "FORWARD accepts all forwarded traffic")
