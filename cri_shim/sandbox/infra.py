"""The infra containers holding pod PID namespaces: their spec, running, watching and removing them.

A pod with a PID namespace of its own needs a process to be PID 1 there (catatonit in pause
mode: it only waits, and reaps). Every container of the pod can see it in /proc, and one with
CAP_SYS_PTRACE can reach into it (/proc/1/root, /proc/1/cwd, ptrace), so it is confined at
least as a container is, as containerd confines its pause container: the pod's handler runs it
from a bundle of ours, in a mount namespace of its own whose root is a read-only directory
holding nothing but the infra binary (bind-mounted, so it must be statically linked), /proc and
a /dev tmpfs; with no capabilities, no_new_privs, the RuntimeDefault seccomp profile, an
unprivileged user (the pod's run_as_user/run_as_group where it sets them, else 65535 as the
pause image's), no devices, in the pod's infra cgroup, and in the pod's pinned net/ipc/uts
namespaces, and in the pod's user namespace when it has one (its root directory and binary
are then seen as owned by nobody, which changes nothing for a read-only root it only executes).

`run --detach` (runc or crun) returns once the process runs; it is then reparented to init, so
nothing here reaps it. An infra container is named by the sandbox id in a --root of its own per
handler (<run_dir>/infra/state/<handler>), and its process by (pid, start time) in the record. A
pidfd watch notices an infra process that dies while the daemon runs, so its sandbox can turn
NOTREADY, as containerd does when a pause container exits. Removal kills the process by pidfd
first: runc's `delete --force` alone polls for the death it caused every 100 ms.

Every infra container of a host gets the same seccomp profile, so later ones of a handler are
handed the filter its runtime compiled for the first (cri_shim.runtime.seccompfilters).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cri_shim.config import Config
from cri_shim.errors import Internal
from cri_shim.linux import proc
from cri_shim.oci import apparmor, resources, seccomp, security
from cri_shim.oci.context import HostInfo
from cri_shim.runtime.runc import Runc
from cri_shim.runtime.seccompfilters import SeccompFilters
from cri_shim.sandbox.record import SANDBOX_ID, Infra, Sandbox
from cri_shim.store import atomic

log = logging.getLogger("cri_shim.sandbox")

# The pause image's user and group, for pods that name none.
DEFAULT_ID = 65535
# containerd's pause container; clamped to what this host lets the daemon set.
OOM_SCORE_ADJ = -998
_PT_INTERP = 3


def marker(sandbox_id: str) -> str:
    """The environment entry an infra process carries, so that recovery can find one whose pid
    a crash kept from being recorded."""
    return f"CRI_SHIM_SANDBOX={sandbox_id}"


def static_binary(name: str) -> str:
    """The infra binary's absolute path; Internal when it is missing or dynamically linked (the
    infra root has no libraries)."""
    path = shutil.which(name)
    if path is None:
        raise Internal(f"infra binary {name!r} not found (runtime.infra); a pod PID namespace needs it")
    path = os.path.realpath(path)
    if _interpreter(path):
        raise Internal(f"infra binary {path!r} is dynamically linked; runtime.infra must name a static binary")
    return path


def _interpreter(path: str) -> bool:
    """Whether an ELF64 little-endian file names a program interpreter (PT_INTERP)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return False
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return any(int.from_bytes(table[i : i + 4], "little") == _PT_INTERP for i in range(0, len(table), phentsize))


def make_root(directory: Path, binary: str) -> None:
    """The shared read-only root of every infra container: mount points only (idempotent). The
    binary keeps its name there, so that it is seen as itself in the pod's /proc."""
    for sub in ("dev", "proc"):
        (directory / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    (directory / os.path.basename(binary)).touch(mode=0o755, exist_ok=True)


def spec(sb: Sandbox, binary: str, root: Path, host: HostInfo) -> dict[str, Any]:
    """The OCI spec of the sandbox's infra container."""
    inside = "/" + os.path.basename(binary)
    sc = sb.config.linux.security_context
    uid = sc.run_as_user.value if sc.HasField("run_as_user") else DEFAULT_ID
    gid = sc.run_as_group.value if sc.HasField("run_as_group") else DEFAULT_ID
    no_caps: dict[str, list[str]] = {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    namespaces = [{"type": "pid"}, {"type": "mount"}]
    kinds = {"user": "user", "net": "network", "ipc": "ipc", "uts": "uts"}
    namespaces += [{"type": kinds[kind], "path": path} for kind, path in sorted(sb.pins.items())]
    if host.cgroup_v2:
        namespaces.append({"type": "cgroup"})
    ids = sb.id_mappings
    mappings = ids.oci() if ids is not None else {}
    # Where AppArmor is on, the runtime's default profile, as containerd's pause container gets its own.
    profile = {"apparmorProfile": apparmor.DEFAULT_PROFILE} if host.apparmor_enabled else {}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": uid, "gid": gid},
            "args": [inside, "-P"],
            "env": [marker(sb.id)],
            "cwd": "/",
            "capabilities": no_caps,
            "noNewPrivileges": True,
            "oomScoreAdj": resources.clamp_oom_score_adj(OOM_SCORE_ADJ, host.oom_score_adj_min),
            **profile,
        },
        "root": {"path": str(root), "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=64k"]},
            {"destination": inside, "type": "bind", "source": binary, "options": ["bind", "ro", "nosuid", "nodev"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": sb.infra_cgroup,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": list(security.MASKED_PATHS),
            "readonlyPaths": list(security.READONLY_PATHS),
            "seccomp": seccomp.runtime_default([], arch=host.arch),
            **mappings,
        },
    }


class InfraContainers:
    """Running, watching and removing infra containers, with one runtime per handler."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.base = cfg.run_dir / "infra"
        systemd = cfg.runtime.cgroup_driver == "systemd"
        self._runtimes = {
            name: Runc(h.path, self.base / "state" / name, systemd_cgroup=systemd) for name, h in cfg.runtime.handlers.items()
        }
        self._root = self.base / "rootfs"
        # The binary, the shared root and the host's facts, found and made at the first start.
        self._prepared: tuple[str, HostInfo] | None = None
        self._watches: dict[str, int] = {}
        self._filters = SeccompFilters()

    def _runtime(self, handler: str) -> Runc:
        return self._runtimes.get(handler) or self._runtimes[self.cfg.runtime.default_handler]

    def runtime_binary(self, handler: str) -> str:
        """The OCI runtime binary the handler runs (verbose status's runtimeType)."""
        return self._runtime(handler).binary

    async def start(self, sb: Sandbox, bundle: Path) -> Infra:
        """Runs the sandbox's infra container from a bundle in `bundle`; its process's identity."""
        if self._prepared is None:
            binary = static_binary(self.cfg.runtime.infra)
            await asyncio.to_thread(make_root, self._root, binary)
            self._prepared = (binary, await asyncio.to_thread(HostInfo.detect))
        binary, host = self._prepared
        config = spec(sb, binary, self._root, host)
        if "apparmorProfile" in config["process"]:
            await asyncio.to_thread(apparmor.ensure_default_loaded)
        runtime = self._runtime(sb.runtime_handler)
        reused = self._filters.annotate(runtime.root, config)

        def write() -> None:
            bundle.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic.write_json(bundle / "config.json", config, durable=False)

        await asyncio.to_thread(write)
        pid_file = bundle / "pid"
        try:
            await runtime.run_detached(sb.id, bundle, pid_file)
        except Internal as exc:
            self._filters.forget(runtime.root, config)
            raise Internal(f"the pod's infra process did not start: {exc}") from None
        pid = int(pid_file.read_text())
        started = proc.start_time(pid)
        if started is None:
            raise Internal("the pod's infra process exited at once")
        if not reused:
            self._filters.learn(runtime.root, config, sb.id)
        return Infra(pid, started)

    def watch(self, sandbox_id: str, infra: Infra, on_exit: Callable[[str], None]) -> bool:
        """Calls on_exit(sandbox_id) once the infra process exits; False when it already has."""
        fd = proc.open_pidfd(infra.pid, infra.start_time)
        if fd is None:
            return False
        loop = asyncio.get_running_loop()

        def exited() -> None:
            self.unwatch(sandbox_id)
            log.warning("infra process exited", extra={"sandbox": sandbox_id, "pid": infra.pid})
            on_exit(sandbox_id)

        self._watches[sandbox_id] = fd
        loop.add_reader(fd, exited)
        return True

    def unwatch(self, sandbox_id: str) -> None:
        fd = self._watches.pop(sandbox_id, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    async def stop(self, sandbox_id: str, infra: Infra | None, strays: set[int]) -> None:
        """Kills the recorded infra process and any stray pid of its cgroup, waits for them, and
        deletes the infra container's runtime state (and so its cgroup), with the handler whose
        state holds it: a pod of the default handler ("") may have been made under another
        default before a restart."""
        self.unwatch(sandbox_id)
        targets = [(infra.pid, infra.start_time)] if infra else []
        for pid in strays - {pid for pid, _ in targets}:  # the recorded process is in its cgroup too
            started = proc.start_time(pid)
            if started is not None:
                targets.append((pid, started))
        for pid, started in targets:
            await proc.kill_and_wait(pid, started)
        for runtime in self._runtimes.values():
            await runtime.delete(sandbox_id)  # a handler without the infra's state has nothing to delete

    def known(self) -> dict[str, str]:
        """Sandbox ids that have infra container state, with their handler's name; entries a
        runtime keeps of its own there (crun's `.cache` of compiled seccomp filters) are not
        sandboxes, and recovery must not `delete --force` them."""
        found = {}
        for name, runtime in self._runtimes.items():
            if runtime.root.is_dir():
                found.update({entry.name: name for entry in runtime.root.iterdir() if SANDBOX_ID.fullmatch(entry.name)})
        return found

    def close(self) -> None:
        for sandbox_id in list(self._watches):
            self.unwatch(sandbox_id)
