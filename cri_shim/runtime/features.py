"""What each OCI runtime handler can do, asked of the runtime itself at start-up.

Recursive read-only mounts need both the runtime's "rro" mount option (`runc features`
lists its mount options since runc 1.1) and mount_setattr(2), which Linux has from 5.12;
containerd checks the same two. A runtime without `features` (or that fails it) offers none of
its own.

User namespaces need idmapped mounts, which cri-shim makes itself (cri_shim.linux.idmap) for
handlers that cannot (runc 1.1 lists no `idmap` mount extension, crun 1.8 has no `features`):
so they are offered for every handler on a host that has the syscalls, overlayfs over idmapped
layers (Linux 5.19) and a state and run directory every user may traverse (the handler reaches
the container's root and the infra root as the pod's root, an unprivileged user on the host).
Handlers that list linux.mountExtensions.idmap could make the idmapped binds themselves from the
mounts' uidMappings; cri-shim still makes them for every handler, so one path is exercised.
crun gives a user-namespaced container's stdio to the container's root before joining the
namespace; that is harmless because no process cri-shim starts gets the host's /dev/null as
stdio (conmon.py, runc.run_detached, execproc): each gets pipes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cri_shim.errors import Internal
from cri_shim.linux import idmap
from cri_shim.runtime.runc import Runc

log = logging.getLogger("cri_shim.runtime")

# The first kernel with mount_setattr(2).
MOUNT_SETATTR_KERNEL = (5, 12)
# The first kernel whose overlayfs takes idmapped layers.
IDMAPPED_LAYERS_KERNEL = (5, 19)


@dataclass(frozen=True)
class HandlerFeatures:
    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as 6.1.0-18-amd64."""
    match = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return (int(match[1]), int(match[2])) if match else (0, 0)


def traversable(path: Path) -> bool:
    """Whether every directory from / down to path (which need not exist yet) lets others search it."""
    for directory in [path, *path.parents]:
        try:
            mode = os.stat(directory).st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            return False
    return True


def userns_host(kernel: tuple[int, int], reached: list[Path]) -> bool:
    """Whether this host can run pods in user namespaces with idmapped files: the kernel, and the
    directories the pod's root must reach on the way to a container's root."""
    return idmap.supported() and kernel >= IDMAPPED_LAYERS_KERNEL and all(traversable(p) for p in reached)


def from_features(text: bytes, kernel: tuple[int, int], userns: bool = False) -> HandlerFeatures:
    """The features a `runtime features` answer and the kernel allow (userns: userns_host())."""
    try:
        options = set(json.loads(text).get("mountOptions") or [])
    except (ValueError, AttributeError):
        options = set()
    return HandlerFeatures(recursive_read_only_mounts="rro" in options and kernel >= MOUNT_SETATTR_KERNEL,
                           user_namespaces=userns)


async def detect(runtime: Runc, userns: bool) -> HandlerFeatures:
    """The handler's features, only user namespaces (when the host has them) when it cannot say."""
    try:
        text = await runtime.run("features")
    except (Internal, OSError) as exc:  # OSError: a configured handler that is not installed
        log.info("runtime cannot list its features", extra={"runtime": runtime.binary, "error": str(exc)})
        return HandlerFeatures(user_namespaces=userns)
    return from_features(text, kernel_version(), userns)
