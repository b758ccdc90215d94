"""Masked and read-only paths, no_new_privs, AppArmor, sysctls: the remaining process guards."""

from __future__ import annotations

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument
from cri_shim.linux import kernel
from cri_shim.oci import apparmor as apparmor_profiles
from cri_shim.sandbox import sysctl

# The OCI defaults (kubelet's for procMount Default too), for containers cri-shim makes itself: the infra
# container. A CRI container gets the lists it is sent, as with containerd.
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def paths(sc: api_pb2.LinuxContainerSecurityContext, privileged: bool) -> tuple[list[str], list[str]]:
    """(maskedPaths, readonlyPaths): none for privileged containers, else exactly the lists sent.

    kubelet sends its defaults for procMount Default and empty lists for Unmasked; on the wire an empty
    repeated field cannot be told from an absent one, so an empty list means none, as containerd reads it
    (it clears its spec defaults and applies the CRI lists): defaults put back would make Unmasked mean
    Default.
    """
    if privileged:
        return [], []
    return list(sc.masked_paths), list(sc.readonly_paths)


def apparmor(sc: api_pb2.LinuxContainerSecurityContext, host_enabled: bool) -> str | None:
    """process.apparmorProfile. On a host with AppArmor a container that names no profile, or
    RuntimeDefault, gets the runtime's default profile (cri_shim.oci.apparmor, loaded before
    the container is created), as with containerd and CRI-O; a localhost profile must be loaded.
    On hosts without AppArmor a confining profile is refused, as containerd does."""
    if sc.HasField("apparmor"):
        kind, name = sc.apparmor.profile_type, sc.apparmor.localhost_ref
    elif sc.apparmor_profile:
        profile = sc.apparmor_profile
        if profile == "unconfined":
            kind, name = api_pb2.SecurityProfile.Unconfined, ""
        elif profile == "runtime/default":
            kind, name = api_pb2.SecurityProfile.RuntimeDefault, ""
        else:
            kind, name = api_pb2.SecurityProfile.Localhost, profile
    elif host_enabled:
        kind, name = api_pb2.SecurityProfile.RuntimeDefault, ""
    else:
        return None
    if kind not in api_pb2.SecurityProfile.ProfileType.values():  # proto3 keeps unknown enum numbers
        raise InvalidArgument(f"unknown apparmor profile type {kind}")
    if kind == api_pb2.SecurityProfile.Unconfined:
        return None
    if not host_enabled:
        raise InvalidArgument("apparmor is not supported on this host")
    if kind == api_pb2.SecurityProfile.RuntimeDefault:
        return apparmor_profiles.DEFAULT_PROFILE
    name = name.removeprefix("localhost/")
    if not name:
        raise InvalidArgument("apparmor localhost profile needs a profile name")
    if name not in kernel.apparmor_profiles():
        raise InvalidArgument(f"apparmor profile {name!r} is not loaded")
    return name


def sysctls(values: dict[str, str], host_network: bool, host_ipc: bool) -> dict[str, str]:
    """linux.sysctl: the pod's sysctls in dot form, named and classified as the pod's own were
    (cri_shim.sandbox.sysctl), refused when the container shares that namespace with the host."""
    out = {}
    for key, value in values.items():
        try:
            s = sysctl.parse(key, value)
        except sysctl.SysctlError as exc:
            raise InvalidArgument(str(exc)) from None
        if s.kind == sysctl.IPC and host_ipc or s.kind == sysctl.NET and host_network:
            raise InvalidArgument(f"sysctl {key!r} would change the host's namespace")
        out[s.name] = s.value
    return out
