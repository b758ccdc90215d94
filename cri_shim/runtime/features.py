"""What each OCI runtime handler can do, asked of the runtime itself at start-up.

Recursive read-only mounts need both the runtime's "rro" mount option (`runc features`
lists its mount options since runc 1.1) and mount_setattr(2), which Linux has from 5.12;
containerd checks the same two. A runtime without `features` (or that fails it) offers none of
its own.

User namespaces need idmapped mounts, which cri-shim makes itself (cri_shim.linux.idmap) for
handlers that cannot (runc 1.1 lists no `idmap` mount extension, crun 1.8 has no `features`):
so they are offered for every handler, or for none. A kernel version says too little (which
filesystems take idmapped mounts, and how overlayfs takes idmapped layers, changed from 5.12
to 6.15), so a probe at start-up makes what a container in a user namespace needs, by the code
that makes it for containers (Rootfs.mount_empty): an idmapped copy of a directory of the image
store's filesystem, with an overlay over it whose upper and work directories are where
container roots are. It runs on a thread of its own in a private mount namespace (nothing it
mounts reaches the host's, and all of it goes when the thread ends), within PROBE_TIMEOUT: it
takes 10 to 25 ms, 0.2 to 1.3 s on an emulated node. The directories the pod's root reaches
on the way to a container's root and the infra root (as an unprivileged user on the host) must
also let every user traverse them. What the probe found is logged and shown in verbose Status (userNamespaces); where it
failed, RunPodSandbox refuses a pod with a user namespace (FAILED_PRECONDITION).
Handlers that list linux.mountExtensions.idmap could make the idmapped binds themselves from the
mounts' uidMappings; cri-shim still makes them for every handler, so one path is exercised.
crun gives a user-namespaced container's stdio to the container's root before joining the
namespace; that is harmless because no process cri-shim starts gets the host's /dev/null as
stdio (conmon.py, runc.run_detached, execproc): each gets pipes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cri_shim.errors import Internal
from cri_shim.idmappings import MIN_LENGTH, IdMappings, Mapping
from cri_shim.image.rootfs import Rootfs
from cri_shim.linux import idmap, syscalls, threads, userns
from cri_shim.runtime.runc import Runc

log = logging.getLogger("cri_shim.runtime")

# The first kernel with mount_setattr(2).
MOUNT_SETATTR_KERNEL = (5, 12)
# How long the user-namespace probe may take (it takes milliseconds).
PROBE_TIMEOUT = 10.0
# The probe's directory under the container roots' (a crash's leftover goes as an orphaned rootfs).
PROBE_PREFIX = "userns-probe-"
# The probe's mapping: only its mount uses it, and only while the probe runs (nothing stays owned by it).
PROBE_IDS = IdMappings((Mapping(0, 2**31, MIN_LENGTH),), (Mapping(0, 2**31, MIN_LENGTH),))


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


@dataclass(frozen=True)
class UsernsCheck:
    """Whether this host runs pods in user namespaces, why not, and what the probe took."""

    offered: bool
    problem: str = ""
    seconds: float = 0.0


def _mount_privately(rootfs: Rootfs, where: Path, namespace: str) -> None:
    """On a thread of its own: a private mount namespace, and the probe's overlay in it."""
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    rootfs.mount_empty(where, (namespace, PROBE_IDS))


async def _probe_mount(rootfs: Rootfs, under: Path, timeout: float) -> str:
    """What keeps an idmapped container root from being mounted under under ("" when nothing does)."""
    where = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=PROBE_PREFIX, dir=under))
    try:
        async with userns.holder([], PROBE_IDS) as pid:
            namespace = f"/proc/{pid}/ns/user"
            mount = asyncio.ensure_future(threads.on_new_thread(
                lambda: _mount_privately(rootfs, where, namespace), "userns-probe", lambda _: None))
            done, _ = await asyncio.wait([mount], timeout=timeout)
            if not done:  # the thread is left to end on its own, holding only its private namespace
                return f"the probe's mounts took more than {timeout}s"
            mount.result()
        return ""
    except (OSError, Internal) as exc:
        return f"an overlay over an idmapped layer cannot be mounted: {exc}"
    finally:
        await asyncio.to_thread(shutil.rmtree, where, True)


async def probe_userns(rootfs: Rootfs, under: Path, reached: list[Path], timeout: float = PROBE_TIMEOUT) -> UsernsCheck:
    """Whether this host can run pods in user namespaces with idmapped files: the syscalls, the
    directories the pod's root must reach on the way to a container's root (reached), and an
    overlay over an idmapped layer of the image store with its upper directory under under
    (where container roots are), made for real."""
    started = time.monotonic()
    if not idmap.supported():
        problem = f"no idmapped mounts on {platform.machine()}"
    else:
        closed = [str(p) for p in reached if not traversable(p)]
        problem = (f"not every user may traverse {', '.join(closed)}" if closed
                   else await _probe_mount(rootfs, under, timeout))
    check = UsernsCheck(not problem, problem, round(time.monotonic() - started, 4))
    if check.offered:
        log.info("user namespaces offered", extra={"probe_seconds": check.seconds})
    else:
        log.warning("user namespaces not offered", extra={"reason": problem, "probe_seconds": check.seconds})
    return check


def from_features(text: bytes, kernel: tuple[int, int], userns: bool = False) -> HandlerFeatures:
    """The features a `runtime features` answer and the kernel allow (userns: what probe_userns found)."""
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
