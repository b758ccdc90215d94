"""Pod subnets as an operator or kubelet names them: one CIDR, or two for dual-stack ("v4,v6").

network.default_subnet and the pod CIDR of UpdateRuntimeConfig both become the embedded
network's host-local ranges (one per subnet, so a dual-stack pod gets an address of each
family) and the node's masquerade rules (cri_shim.network.masquerade), so they are checked once
here, before either is used: a subnet that host-local would refuse (host bits set, too small
to hold a gateway and a pod) or one no pod may sit in (loopback, multicast, link-local, the
whole address space) would fail every later pod or masquerade traffic that is not the pods'.
"""

from __future__ import annotations

import ipaddress

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network

# kubelet joins a dual-stack node's pod CIDRs with a comma; nothing longer is a pod CIDR.
MAX_TEXT = 256


def parse(text: str) -> list[Subnet]:
    """The subnets of "cidr" or "cidr,cidr" (one of each family); ValueError saying why not."""
    if len(text) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters")
    parts = [p.strip() for p in text.split(",")]
    if not 1 <= len(parts) <= 2:
        raise ValueError("one CIDR, or two (IPv4 and IPv6) separated by a comma")
    subnets = [_one(p) for p in parts]
    if len({s.version for s in subnets}) != len(subnets):
        raise ValueError("two CIDRs must be one IPv4 and one IPv6")
    return subnets


def _one(part: str) -> Subnet:
    try:
        subnet = ipaddress.ip_network(part)
    except ValueError as exc:
        raise ValueError(f"{part[:64]!r} is not a CIDR with its host bits clear ({exc})") from None
    if subnet.prefixlen == 0 or subnet.num_addresses < 4:
        raise ValueError(f"{subnet} is not a pod subnet (it must hold at least a gateway and a pod, and not be everything)")
    if subnet.is_loopback or subnet.is_multicast or subnet.is_link_local or subnet.is_unspecified or subnet.is_reserved:
        raise ValueError(f"{subnet} is not a unicast range pods can use")
    return subnet
