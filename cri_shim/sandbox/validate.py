"""Checking a RunPodSandbox request before anything is made, and deriving what to make.

Every refusal is an InvalidArgument naming the field. Limits: metadata name, namespace and uid,
labels and annotations are bounded as Kubernetes bounds them (cri_shim.metadata: they are
stored, listed and passed to CNI plugins); a hostname at most 64 bytes (the kernel's), and only
for a pod with a UTS namespace of its own (not host-network); namespace modes must be known values
(proto3 passes unknown enum numbers through); a log_directory, when given, must be absolute
and free of NUL (container log paths are joined to it); DNS servers must be IP addresses and
search domains and options single words (they are written into resolv.conf); run_as_user and
run_as_group kernel ids (the infra process runs as them), mapped in the pod's user namespace
when it has one; user namespace mappings as cri_shim.idmappings checks them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cri_shim.api import api_pb2 as api
from cri_shim.cgroups import CgroupPathError, normalize_parent
from cri_shim import metadata
from cri_shim.config import Config
from cri_shim.errors import InvalidArgument
from cri_shim.network.pod import PortMapping
from cri_shim.oci.values import check_id
from cri_shim import idmappings
from cri_shim.sandbox import sysctl
from cri_shim.sandbox.record import NAMESPACE_KINDS

MAX_HOSTNAME_BYTES = 64

_PROTOCOLS = {api.TCP: "tcp", api.UDP: "udp", api.SCTP: "sctp"}


@dataclass(frozen=True)
class PodPlan:
    """What a valid request asks the runtime to make."""

    own_namespaces: tuple[str, ...]
    pod_pid: bool
    hostname: str
    sysctls: tuple[sysctl.Sysctl, ...]
    cgroup_parent: str
    ports: tuple[PortMapping, ...]

    @property
    def shm(self) -> bool:
        """A pod of its own IPC namespace gets its own /dev/shm."""
        return "ipc" in self.own_namespaces


_METADATA_BOUNDS = (
    ("name", metadata.MAX_POD_NAME_BYTES),
    ("namespace", metadata.MAX_NAMESPACE_BYTES),
    ("uid", metadata.MAX_UID_BYTES),
)

_MODES = (api.POD, api.CONTAINER, api.NODE, api.TARGET)


def _namespaces(sc: api.LinuxSandboxSecurityContext) -> tuple[tuple[str, ...], bool]:
    options = sc.namespace_options
    for field in ("network", "pid", "ipc"):
        if getattr(options, field) not in _MODES:  # proto3 keeps unknown enum numbers: refuse them
            raise InvalidArgument(f"namespace mode {getattr(options, field)} for {field} is unknown")
        if getattr(options, field) == api.TARGET:
            raise InvalidArgument(f"namespace mode TARGET is for containers, not for a pod ({field})")
    ids = idmappings.check(options)
    if ids is not None:
        for field, mappings in (("run_as_user", ids.uids), ("run_as_group", ids.gids)):
            if sc.HasField(field) and not any(m.container_id <= getattr(sc, field).value < m.container_id + m.length
                                               for m in mappings):
                # The infra process runs as it: outside the mapping the kernel would refuse it.
                raise InvalidArgument(f"sandbox {field} {getattr(sc, field).value} is not mapped in the pod's user namespace")
    own = ["user"] if ids is not None else []
    if options.network != api.NODE:
        own += ["net", "uts"]  # the UTS namespace follows the network's, as in kubelet and containerd
    if options.ipc != api.NODE:
        own.append("ipc")
    return tuple(k for k in NAMESPACE_KINDS if k in own), options.pid == api.POD


def _check_ids(sc: api.LinuxSandboxSecurityContext) -> None:
    """run_as_user and run_as_group become the infra process's ids: kernel ids or nothing."""
    for field in ("run_as_user", "run_as_group"):
        if sc.HasField(field):
            check_id(f"sandbox {field}", getattr(sc, field).value)


def _check_dns(dns: api.DNSConfig) -> None:
    """Each server an IP address, each search domain and option one word: every one becomes a
    line or a word of the pod's resolv.conf, and a newline would add lines of its own."""
    for server in dns.servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidArgument(f"dns server {server!r} is not an IP address") from None
    for field, values in (("search", dns.searches), ("option", dns.options)):
        for value in values:
            if not value or any(c.isspace() or c == "\x00" for c in value):
                raise InvalidArgument(f"dns {field} {value!r} must be one word (no spaces, newlines or NUL)")


def _ports(mappings: list[api.PortMapping]) -> tuple[PortMapping, ...]:
    ports = []
    for m in mappings:
        if not 0 < m.container_port < 65536 or not 0 <= m.host_port < 65536:
            raise InvalidArgument(f"port mapping {m.host_port}:{m.container_port} is out of range")
        if m.protocol not in _PROTOCOLS:
            raise InvalidArgument(f"port mapping protocol {m.protocol} is unknown")
        if m.host_ip:
            try:
                ipaddress.ip_address(m.host_ip)
            except ValueError:
                raise InvalidArgument(f"port mapping host_ip {m.host_ip!r} is not an IP address") from None
        if m.host_port:  # a mapping without a host port publishes nothing
            ports.append(PortMapping(m.host_port, m.container_port, _PROTOCOLS[m.protocol], m.host_ip))
    return tuple(ports)


def plan(config: api.PodSandboxConfig, runtime_handler: str, cfg: Config, host_name: str) -> PodPlan:
    """The PodPlan of a request, or InvalidArgument."""
    if not config.HasField("metadata"):
        raise InvalidArgument("sandbox config has no metadata")
    for field, max_bytes in _METADATA_BOUNDS:
        metadata.check_name(f"sandbox metadata {field}", getattr(config.metadata, field), max_bytes)
    if config.log_directory and not config.log_directory.startswith("/"):
        raise InvalidArgument(f"log_directory {config.log_directory!r} must be an absolute path")
    if "\x00" in config.log_directory:
        raise InvalidArgument("log_directory must not contain NUL")
    if runtime_handler and runtime_handler not in cfg.runtime.handlers:
        raise InvalidArgument(f"unknown runtime handler {runtime_handler!r} (known: {', '.join(cfg.runtime.handlers)})")
    metadata.check_labels_and_annotations("sandbox", config.labels, config.annotations)
    _check_dns(config.dns_config)
    _check_ids(config.linux.security_context)
    own, pod_pid = _namespaces(config.linux.security_context)
    if config.hostname and "uts" not in own:
        # Setting it would rename the node; kubelet sends no hostname for host-network pods.
        raise InvalidArgument(f"hostname {config.hostname!r} needs the pod's own UTS namespace, "
                              "but a host-network pod uses the node's")
    hostname = config.hostname or host_name
    if len(hostname.encode()) > MAX_HOSTNAME_BYTES or any(c.isspace() or c == "\x00" for c in hostname):
        raise InvalidArgument(f"hostname {config.hostname!r} is invalid (at most {MAX_HOSTNAME_BYTES} bytes, no spaces)")
    sysctls = []
    for name, value in sorted(config.linux.sysctls.items()):
        try:
            s = sysctl.parse(name, value)
        except sysctl.SysctlError as exc:
            raise InvalidArgument(str(exc)) from None
        if s.kind not in own:
            raise InvalidArgument(f"sysctl {name!r} needs the pod's own {s.kind} namespace, but the pod uses the host's")
        sysctls.append(s)
    driver = cfg.runtime.cgroup_driver
    try:
        parent = normalize_parent(driver, config.linux.cgroup_parent or cfg.runtime.default_cgroup_parent)
    except CgroupPathError as exc:
        raise InvalidArgument(str(exc)) from None
    return PodPlan(
        own_namespaces=own,
        pod_pid=pod_pid,
        hostname=hostname,
        sysctls=tuple(sysctls),
        cgroup_parent=parent,
        ports=_ports(list(config.port_mappings)),
    )
