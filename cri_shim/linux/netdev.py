"""Interface counters of a network namespace, read through a process inside it (/proc/PID/net/dev).

PodSandboxStats and ListPodSandboxMetrics both report them; loopback is left out, as
cAdvisor and containerd leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class InterfaceCounters:
    """One interface's cumulative counters since it was made."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def interfaces(pid: int) -> list[InterfaceCounters]:
    """The non-loopback interfaces of pid's network namespace; none when the process is gone."""
    try:
        lines = (PROC / str(pid) / "net" / "dev").read_text().splitlines()[2:]
    except OSError:
        return []
    out = []
    for line in lines:
        name, _, counters = line.partition(":")
        name, values = name.strip(), counters.split()
        if name == "lo" or len(values) < 12:
            continue
        # receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs drop ...
        rx, tx = [int(v) for v in values[:4]], [int(v) for v in values[8:12]]
        out.append(InterfaceCounters(name, *rx, *tx))
    return out


def default_interface(found: list[InterfaceCounters]) -> InterfaceCounters | None:
    """eth0, the pod's CNI interface, or else the first one."""
    return next((i for i in found if i.name == "eth0"), found[0] if found else None)
