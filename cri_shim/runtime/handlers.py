"""Which OCI runtime handlers work on this host, and which one runs the pods that name none.

crun creates and starts a container several times faster than runc, so it is the default when
it is installed and passes a self-check at start-up; otherwise runc is. An operator who sets
runtime.default_handler gets that handler whatever the check says (a failed check is logged).

The self-check is bounded (CHECK_TIMEOUT) and cheap (tens of milliseconds, every handler at
once): the handler must say its version (`--version`, whose first line is "<name> version
<x>"), answer `state` of a container it cannot know with an error this runtime reads as "gone"
(RuncError.gone, which deleting, killing and recovering containers rely on), and run a trivial
container to its end: the infra binary's `--version` (runtime.infra, static) as an unprivileged
user with no capabilities, in new namespaces and a cgroup below the default parent, all
removed afterwards, also when the run overran its timeout and was cut off (under emulation
`runc run` can take the whole 5 seconds): its runtime state, a `runc init` left in the cgroup,
the cgroup and, under the systemd driver, the scope unit (remove_probe). That last step is
what finds a host the runtime cannot work on, such as crun 1.8.1 on a cgroup v1 host whose v2
hierarchy holds a controller ("cgroups in hybrid mode not supported"). What a handler can do beyond running containers is asked separately
(cri_shim.runtime.features).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.cgroups import hierarchy
from cri_shim.cgroups.paths import container_cgroups_path, normalize_parent, parent_path, relative_path
from cri_shim.config import Config
from cri_shim.errors import Internal, NotFound
from cri_shim.runtime.runc import Runc, bounded
from cri_shim.sandbox import infra
from cri_shim.store import atomic

log = logging.getLogger("cri_shim.runtime")

# The handlers tried, in order, when runtime.default_handler is empty.
PREFERRED = ("crun", "runc")
# The name of the container the check runs (never a 64-hex container id), and of one that
# does not exist.
PROBE = "cri-shim-self-check"
_ABSENT = "cri-shim-self-check-absent"
# The probe's user and group: the pause image's.
PROBE_ID = 65535
CHECK_TIMEOUT = 5.0
_VERSION = re.compile(r"^\S+ version (\S+)")


@dataclass(frozen=True)
class HandlerCheck:
    """What the self-check found: the runtime's version, or why it is not usable."""

    binary: str
    version: str = ""
    problem: str = ""

    @property
    def usable(self) -> bool:
        return not self.problem


def probe_spec(binary: str, root: Path, cgroups_path: str) -> dict[str, Any]:
    """A container that prints the static infra binary's version and exits, confined."""
    inside = "/" + os.path.basename(binary)
    no_caps: dict[str, list[str]] = {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": PROBE_ID, "gid": PROBE_ID}, "args": [inside, "--version"], "env": [], "cwd": "/",
            "capabilities": no_caps, "noNewPrivileges": True,
        },
        "root": {"path": str(root), "readonly": True},
        "mounts": [  # runc needs /proc to close its fds before the exec
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": inside, "type": "bind", "source": binary, "options": ["bind", "ro", "nosuid", "nodev"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts", "network")],
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        },
    }


def _parent(cfg: Config) -> tuple[str, str]:
    """The cgroup driver and the normalized default cgroup parent the probes run below."""
    driver = cfg.runtime.cgroup_driver
    return driver, normalize_parent(driver, cfg.runtime.default_cgroup_parent)


async def run_probe(runtime: Runc, cfg: Config, bundle: Path, timeout: float = CHECK_TIMEOUT) -> None:
    """Runs probe_spec's container with the runtime in bundle, then removes it, its cgroup and
    the bundle; Internal with the runtime's words when it cannot (or "timed out" after timeout)."""
    driver, parent = _parent(cfg)
    cgroups_path = container_cgroups_path(driver, parent, f"{PROBE}-{bundle.name}")

    def prepare() -> None:
        binary = infra.static_binary(cfg.runtime.infra)
        infra.make_root(bundle / "rootfs", binary)
        atomic.write_json(bundle / "config.json", probe_spec(binary, bundle / "rootfs", cgroups_path), durable=False)

    try:
        await remove_probe(runtime, driver, cgroups_path)  # left by a check a crash interrupted
        await asyncio.to_thread(prepare)
        await runtime.run("run", "--bundle", str(bundle), PROBE, timeout=timeout)
    finally:
        await remove_probe(runtime, driver, cgroups_path)
        await asyncio.to_thread(shutil.rmtree, bundle, True)


async def remove_probe(runtime: Runc, driver: str, cgroups_path: str) -> None:
    """Removes the probe's container wherever a run cut off (timed out, or a crash) left it: the
    runtime's state (`delete --force`, or its directory when the runtime never wrote a state
    there), processes in its cgroup (a `runc init` the killed runc left), the cgroup, and under
    the systemd driver the scope unit, which systemd would otherwise keep."""
    relative = relative_path(driver, cgroups_path)
    h = hierarchy.detect()
    try:
        await runtime.delete(PROBE)
    except Internal as exc:
        log.info("the self-check's container could not be deleted", extra={"runtime": runtime.binary, "error": str(exc)})
    await asyncio.to_thread(_kill_cgroup, h, relative)
    await asyncio.to_thread(shutil.rmtree, runtime.root / PROBE, True)
    if driver == "systemd":
        await _stop_unit(os.path.basename(relative))
    await asyncio.to_thread(hierarchy.prune, h.dirs(relative))


def _kill_cgroup(h: hierarchy.Hierarchies, relative: str) -> None:
    """SIGKILLs every process in the cgroup until it has none (bounded by CHECK_TIMEOUT)."""
    deadline = time.monotonic() + CHECK_TIMEOUT
    while (pids := hierarchy.processes(h, relative)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


async def _stop_unit(unit: str) -> None:
    """Stops a systemd unit and forgets a failed one; a unit systemd does not know is no error."""
    for action in ("stop", "reset-failed"):
        try:
            proc = await asyncio.create_subprocess_exec(
                "systemctl", action, "--quiet", unit,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        except OSError:
            return
        try:
            await bounded(proc, proc.wait(), CHECK_TIMEOUT, f"systemctl {action} {unit}")
        except Internal as exc:
            log.warning("the self-check's scope was not stopped", extra={"unit": unit, "error": str(exc)})


async def self_check(runtime: Runc, cfg: Config, bundle: Path) -> HandlerCheck:
    """Whether the runtime runs here and reports a missing container as this code expects."""
    try:
        first = (await runtime.run("--version", timeout=CHECK_TIMEOUT)).decode(errors="replace").partition("\n")[0]
    except (Internal, OSError) as exc:
        return HandlerCheck(runtime.binary, problem=f"--version failed: {exc}")
    match = _VERSION.match(first)
    if match is None:
        return HandlerCheck(runtime.binary, problem=f"--version printed no version: {first[:200]!r}")
    version = match[1]
    try:
        await runtime.state(_ABSENT, timeout=CHECK_TIMEOUT)
        return HandlerCheck(runtime.binary, version, problem=f"state reports a container {_ABSENT!r}")
    except NotFound:
        pass
    except Internal as exc:
        return HandlerCheck(runtime.binary, version, problem=f"state of an unknown container is not 'gone': {exc}")
    try:
        await run_probe(runtime, cfg, bundle)
    except (Internal, OSError) as exc:
        return HandlerCheck(runtime.binary, version, problem=f"cannot run a trivial container: {exc}")
    return HandlerCheck(runtime.binary, version)


async def resolve_default(cfg: Config, runtimes: dict[str, Runc]) -> dict[str, HandlerCheck]:
    """Checks every handler and settles runtime.default_handler (when the file left it empty)
    before anything reads it; the checks by handler name."""
    names = list(runtimes)
    base = cfg.run_dir / "self-check"
    driver, parent = _parent(cfg)
    # The default parent's directories the runtimes may make, pruned once every probe is done.
    made = hierarchy.missing_dirs(hierarchy.detect(), parent_path(driver, parent))
    found = await asyncio.gather(*(self_check(runtimes[name], cfg, base / name) for name in names))
    await asyncio.to_thread(shutil.rmtree, base, True)
    await asyncio.to_thread(hierarchy.prune, made)
    checks = dict(zip(names, found))
    for name, check in checks.items():
        if not check.usable:
            log.warning("runtime handler failed its self-check", extra={"handler": name, "error": check.problem})
    configured = cfg.runtime.default_handler
    if not configured:
        usable = [name for name in PREFERRED if name in checks and checks[name].usable]
        # None usable: runc still, so that Status names what is missing.
        cfg.runtime.default_handler = usable[0] if usable else PREFERRED[-1]
    chosen = cfg.runtime.default_handler
    log.info("default runtime handler", extra={
        "handler": chosen, "binary": checks[chosen].binary, "version": checks[chosen].version,
        "chosen_by": "configuration" if configured else "self-check",
    })
    return checks
