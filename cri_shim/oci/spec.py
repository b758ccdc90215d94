"""build_spec(): the OCI runtime spec (config.json) of one container.

It is a pure function of its inputs, apart from what containerd also does while building a
spec: creating missing host paths of CRI mounts and the image's volume directories in the
rootfs. The rules live in the sibling modules; this one only puts their answers together
and checks the combinations that must fail at create time (a privileged container in an
unprivileged pod). CDI devices come resolved (cri_shim.cdi.registry) and are applied last, as
containerd applies them to the spec it built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.api import api_pb2
from cri_shim.cdi.edits import Edits
from cri_shim.errors import InvalidArgument
from cri_shim.oci import capabilities, cdi, devices, mounts, namespaces, process, resources, seccomp, security, signals, user, values
from cri_shim.oci.context import HostInfo, SandboxInfo
from cri_shim.image.imageconfig import ImageConfig

OCI_VERSION = "1.0.2"


@dataclass(frozen=True)
class Defaults:
    """What the operator's configuration puts in every container's spec (the runtime.* keys)."""

    seccomp_profile: str = ""  # the RuntimeDefault profile file; "" for the shipped one
    seccomp_when_unset: bool = False
    pids_limit: int = -1


@dataclass(frozen=True)
class ContainerSpec:
    """The spec and the facts about it that the container record keeps."""

    spec: dict[str, Any]
    user: user.ResolvedUser
    stop_signal: int
    image_volumes: dict[str, str]  # the image's VOLUME paths -> their directories on the host


# Annotation key prefixes the OCI runtimes act on rather than carry: crun's run.oci.* (a seccomp
# filter compiled elsewhere that replaces the spec's profile, files its hooks' output goes to,
# cgroup delegation, the handler it runs the container with), the org.systemd.property.* unit
# properties runc and crun hand systemd (DeviceAllow=, Delegate=), CRIU's configuration file and
# crun's wasm handler selection. A container's annotations are the client's word, copied into the
# spec, so a key under one of these would override what this runtime decides (seccomp, devices,
# cgroups); kubelet sends none. The runtimes compare the keys case-sensitively; the check here
# does not, to refuse near-misses too.
RUNTIME_ANNOTATION_PREFIXES = ("run.oci.", "org.systemd.property.", "org.criu.", "module.wasm.image/")


def check_annotations(annotations: Mapping[str, str]) -> None:
    """InvalidArgument for an annotation key the OCI runtime would act on (see above)."""
    for key in annotations:
        if key.lower().startswith(RUNTIME_ANNOTATION_PREFIXES):
            raise InvalidArgument(f"annotation {key[:64]!r}: keys under {', '.join(RUNTIME_ANNOTATION_PREFIXES)} "
                                  "are read by the OCI runtime and cannot be set by a client")


def _annotations(container_id: str, config: api_pb2.ContainerConfig, sandbox_config: api_pb2.PodSandboxConfig,
                 sandbox: SandboxInfo, image_name: str) -> dict[str, str]:
    out = dict(config.annotations)
    meta = sandbox_config.metadata
    out.update({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": config.metadata.name,
        "io.kubernetes.cri.sandbox-id": sandbox.id,
        "io.kubernetes.cri.sandbox-name": meta.name,
        "io.kubernetes.cri.sandbox-namespace": meta.namespace,
        "io.kubernetes.cri.sandbox-uid": meta.uid,
        "io.kubernetes.cri.image-name": image_name,
        "io.kubernetes.cri.container-id": container_id,
    })
    return out


def build_spec(
    container_id: str,
    config: api_pb2.ContainerConfig,
    sandbox_config: api_pb2.PodSandboxConfig,
    sandbox: SandboxInfo,
    image: ImageConfig,
    rootfs: Path,
    host: HostInfo,
    *,
    image_name: str = "",
    target_pid_ns: str | None = None,
    defaults: Defaults = Defaults(),
    cdi_edits: Edits = Edits(),
) -> ContainerSpec:
    """The config.json dict for a container; raises InvalidArgument for requests that must fail."""
    sc = config.linux.security_context
    privileged = sc.privileged
    if privileged and not sandbox_config.linux.security_context.privileged:
        raise InvalidArgument("a privileged container needs a privileged pod sandbox")
    opts = namespaces.effective(sc.namespace_options, sandbox)
    host_network, host_ipc = opts.network == api_pb2.NODE, opts.ipc == api_pb2.NODE

    who = user.resolve(rootfs, sc, image.user)
    who = dataclasses.replace(who, additional_gids=cdi.additional_gids(who.additional_gids, cdi_edits))
    caps = capabilities.compute(sc.capabilities, privileged, host.last_cap, host.bounding_caps)
    ambient = [capabilities.normalize(c, host.last_cap) for c in sc.capabilities.add_ambient_capabilities]
    proc: dict[str, Any] = {
        "terminal": config.tty,
        "user": {"uid": who.uid, "gid": who.gid, "additionalGids": who.additional_gids},
        "args": process.args(config, image),
        "env": process.merge_env(process.env(config, image, sandbox.hostname), list(cdi_edits.env)),
        "cwd": process.cwd(config, image),
        "capabilities": capabilities.spec(caps, ambient),
        "noNewPrivileges": sc.no_new_privs,
        "oomScoreAdj": resources.clamp_oom_score_adj(config.linux.resources.oom_score_adj, host.oom_score_adj_min),
    }
    values.check_exec(proc["args"], proc["env"])
    profile = security.apparmor(sc, host.apparmor_enabled) if not privileged else None
    if profile:
        proc["apparmorProfile"] = profile

    all_mounts, propagation, volume_dirs = mounts.build(config, sandbox, rootfs, image.volumes, privileged, host.cgroup_v2, host_ipc)
    res = resources.build(config.linux.resources, host.swap_accounting, host.cgroup_v2)
    pids = resources.pids(config.linux.resources, defaults.pids_limit)
    if pids:
        res["pids"] = pids
    if privileged:
        res["devices"] = [{"allow": True, "access": "rwm"}]
        device_nodes = devices.host_devices()
    else:
        device_nodes, rules = devices.from_cri(list(config.devices))
        res["devices"] = devices.default_rules() + rules
    masked, readonly = security.paths(sc, privileged)
    linux: dict[str, Any] = {
        "namespaces": namespaces.build(opts, sandbox, target_pid_ns, host.cgroup_v2, privileged),
        "cgroupsPath": sandbox.cgroups_path(container_id),
        "resources": res,
        "devices": device_nodes,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    }
    if sandbox.id_mappings is not None:
        linux.update(sandbox.id_mappings.oci())
    sysctl = security.sysctls(sandbox.sysctls, host_network, host_ipc)
    if sysctl:
        linux["sysctl"] = sysctl
    if propagation:
        linux["rootfsPropagation"] = propagation
    filt = seccomp.build(sc, privileged, caps, defaults.seccomp_profile, defaults.seccomp_when_unset)
    if filt is not None:
        linux["seccomp"] = filt

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": proc,
        "root": {"path": str(rootfs), "readonly": sc.readonly_rootfs},
        "mounts": all_mounts,
        "annotations": _annotations(container_id, config, sandbox_config, sandbox, image_name),
        "linux": linux,
    }
    if not host_network and sandbox.hostname:
        spec["hostname"] = sandbox.hostname
    cdi.apply(spec, cdi_edits)
    return ContainerSpec(spec=spec, user=who, stop_signal=signals.stop_signal(config, image.stop_signal),
                         image_volumes=volume_dirs)
