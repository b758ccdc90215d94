"""linux.namespaces: which namespaces a container shares with its pod, the host, or another.

Modes come from the container's NamespaceOption (kubelet mirrors the pod's). NODE means the
host's namespace (no entry), POD joins the sandbox's pinned namespace (the host's when the
pod itself uses the host's, a fresh one when the sandbox pinned none), CONTAINER is fresh, TARGET
(pid only) joins another container's PID namespace, whose path the caller resolves. UTS follows
the network: a host-network pod keeps the host's hostname. A container of a pod with a user
namespace joins it (listed first: the runtime joins it before the namespaces it owns); it must
then not ask for the host's user, network, IPC or PID namespace, which a process in the pod's
user namespace cannot join, and a container asking for a pod user namespace its pod does not
have is refused too.

A container config without namespace options reads as pid POD (proto3's zero), which is what
crictl users send into a pod whose own pid mode is CONTAINER: such a pod has no PID namespace to
share, so the container gets one of its own, as the pod asked and as containerd does. A pod that
did ask for a shared one (pid POD) and has lost it is refused: its containers never run apart.
"""

from __future__ import annotations

from cri_shim.api import api_pb2
from cri_shim.errors import FailedPrecondition, InvalidArgument
from cri_shim.oci.context import SandboxInfo


_MODES = (api_pb2.POD, api_pb2.CONTAINER, api_pb2.NODE, api_pb2.TARGET)


def effective(opts: api_pb2.NamespaceOption, sandbox: SandboxInfo) -> api_pb2.NamespaceOption:
    """The container's modes with POD resolved to NODE where the pod itself uses the host's namespace."""
    out = api_pb2.NamespaceOption()
    out.CopyFrom(opts)
    for field, host in (("network", sandbox.host_network), ("ipc", sandbox.host_ipc), ("pid", sandbox.host_pid)):
        if host and getattr(out, field) == api_pb2.POD:
            setattr(out, field, api_pb2.NODE)
    return out


def _check_userns(opts: api_pb2.NamespaceOption, sandbox: SandboxInfo) -> None:
    asked = opts.userns_options.mode if opts.HasField("userns_options") else None
    if sandbox.userns_path is None:
        if asked not in (None, api_pb2.NODE):
            raise InvalidArgument(f"sandbox {sandbox.id} has no user namespace for the container to join")
        return
    if asked not in (None, api_pb2.POD):
        raise InvalidArgument(f"containers of sandbox {sandbox.id} run in its user namespace (userns mode POD)")
    for field in ("network", "ipc", "pid"):
        if getattr(opts, field) == api_pb2.NODE:
            raise InvalidArgument(f"a container in the pod's user namespace cannot use the host's {field} namespace")


def _entry(kind: str, path: str | None) -> dict[str, str]:
    return {"type": kind, "path": path} if path else {"type": kind}


def check_modes(opts: api_pb2.NamespaceOption) -> None:
    """Refuses modes proto3 passed through unknown and a TARGET PID namespace without its target
    (the plan's check, cri_shim.runtime.plan, before anything is made)."""
    for field in ("network", "pid", "ipc"):
        if getattr(opts, field) not in _MODES:
            raise InvalidArgument(f"namespace mode {getattr(opts, field)} for {field} is unknown")
    if opts.pid == api_pb2.TARGET and not opts.target_id:
        raise InvalidArgument("pid namespace mode TARGET needs target_id")


def build(opts: api_pb2.NamespaceOption, sandbox: SandboxInfo, target_pid_ns: str | None, cgroup_v2: bool,
          privileged: bool) -> list[dict[str, str]]:
    """The namespace list of the spec, of modes check_modes() let through."""
    _check_userns(opts, sandbox)
    out = [{"type": "user", "path": sandbox.userns_path}] if sandbox.userns_path else []
    out.append({"type": "mount"})
    if opts.network != api_pb2.NODE:
        out.append(_entry("network", sandbox.netns_path if opts.network == api_pb2.POD else None))
        out.append(_entry("uts", sandbox.uts_ns_path if opts.network == api_pb2.POD else None))
    if opts.ipc != api_pb2.NODE:
        out.append(_entry("ipc", sandbox.ipc_ns_path if opts.ipc == api_pb2.POD else None))
    if opts.pid == api_pb2.POD and sandbox.pod_pid and sandbox.pid_ns_path is None:
        raise FailedPrecondition(f"the PID namespace of sandbox {sandbox.id} is gone (its infra process exited)")
    if opts.pid == api_pb2.TARGET:
        if not target_pid_ns:
            raise FailedPrecondition(f"target container {opts.target_id} has no running process to share a PID namespace with")
        out.append(_entry("pid", target_pid_ns))
    elif opts.pid != api_pb2.NODE:  # fails closed: any mode but NODE is a PID namespace not the host's
        out.append(_entry("pid", sandbox.pid_ns_path if opts.pid == api_pb2.POD else None))
    if cgroup_v2 and not privileged:
        out.append({"type": "cgroup"})
    return out
