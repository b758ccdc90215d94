"""The files a pod's containers bind-mount: hostname, hosts, resolv.conf, and the pod's /dev/shm.

They live in the sandbox's directory and are written atomically (not fsynced: a pod does not
outlive a machine crash, and recovery finds its namespaces gone then). A pod on the host network
gets copies of the host's /etc/hosts; a pod without DNS settings gets the host's
/etc/resolv.conf, as containerd does.
"""

from __future__ import annotations

import os
from pathlib import Path

from cri_shim.api import api_pb2 as api
from cri_shim.linux import syscalls
from cri_shim.store import atomic

HOST_HOSTS = Path("/etc/hosts")
HOST_RESOLV = Path("/etc/resolv.conf")

_LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def hosts_content(hostname: str, ips: list[str]) -> str:
    """/etc/hosts of a pod network: localhost entries, then the pod's addresses with its hostname."""
    return _LOCALHOST + "".join(f"{ip}\t{hostname}\n" for ip in ips)


def resolv_content(dns: api.DNSConfig | None) -> str:
    """resolv.conf from the pod's DNS settings; empty when there are none (then the host's is used)."""
    if dns is None:
        return ""
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {s}" for s in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n" if lines else ""


def _read_host(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def write_identity(directory: Path, hostname: str, dns: api.DNSConfig | None) -> None:
    """Writes hostname and resolv.conf (known before the pod has an address)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o711)
    atomic.write_bytes(directory / "hostname", f"{hostname}\n".encode(), mode=0o644, durable=False)
    resolv = resolv_content(dns).encode() or _read_host(HOST_RESOLV)
    atomic.write_bytes(directory / "resolv.conf", resolv, mode=0o644, durable=False)


def write_hosts(directory: Path, hostname: str, ips: list[str], host_network: bool) -> None:
    """Writes hosts, once the pod's addresses are known."""
    content = _read_host(HOST_HOSTS) if host_network else hosts_content(hostname, ips).encode()
    atomic.write_bytes(directory / "hosts", content, mode=0o644, durable=False)


def mount_shm(path: Path, size: int) -> None:
    """Mounts the pod's /dev/shm: a tmpfs of the given size, nosuid, nodev, noexec."""
    path.mkdir(parents=True, exist_ok=True, mode=0o755)
    flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    syscalls.mount("shm", str(path), "tmpfs", flags, f"mode=1777,size={size}")


def unmount_shm(path: Path) -> None:
    """Unmounts and removes the pod's /dev/shm mount point; an absent one is fine."""
    while syscalls.umount_detach(str(path)):  # stacked mounts from a crash during a retry
        pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
