"""Start-up reconciliation of sandbox records with the system.

- A record still in phase creating belongs to a RunPodSandbox that a crash interrupted: every
  resource it names is released (CNI DEL from the cache, infra kill, pins, shm, cgroups, files)
  and the record is deleted.
- A ready sandbox stays ready when its pins are still mounted and its infra process (when it has
  one) is the recorded one (pid and start time); otherwise it turns notready, for kubelet's Stop
  and Remove to finish. Its IPs come from the record (the CNI cache if the record lacks them).
- Leftovers no record owns (pins, cached CNI attachments, sandbox directories, infra container
  state, unreadable records, and the infra processes and cgroups of sandboxes named by those)
  are released.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from cri_shim.linux import mountinfo, proc
from cri_shim.sandbox import files, namespaces
from cri_shim.sandbox.record import CREATING, NAMESPACE_KINDS, NOTREADY, READY, Sandbox

if TYPE_CHECKING:
    from cri_shim.sandbox.manager import SandboxManager

log = logging.getLogger("cri_shim.sandbox")


def _intact(sb: Sandbox, nsfs: set[str]) -> bool:
    if any(path not in nsfs for path in sb.pins.values()):
        return False
    return sb.infra is None or proc.is_alive(sb.infra.pid, sb.infra.start_time)


async def recover(mgr: SandboxManager) -> None:
    store = mgr.store
    for path, exc in await asyncio.to_thread(store.load):
        log.error("unreadable sandbox record removed", extra={"path": str(path), "error": str(exc)})
        path.unlink(missing_ok=True)
    nsfs = set(mountinfo.mounted_at(await asyncio.to_thread(mountinfo.read), "nsfs"))
    for sb in store:
        if sb.phase == CREATING:
            log.warning("rolling back a sandbox whose creation was interrupted", extra={"sandbox": sb.id})
            await mgr.rollback(sb, RuntimeError("interrupted by a restart"))
            continue
        if not sb.ips and not sb.host_network and sb.phase == READY:
            sb.ips = mgr.resources.cached_ips(sb.id)
        if sb.phase == READY and not _intact(sb, nsfs):
            log.warning("sandbox not ready after restart: namespaces or infra process gone", extra={"sandbox": sb.id})
            sb.phase = NOTREADY
            store.save(sb)
        if sb.phase == READY:
            mgr.watch_infra(sb)
    await _sweep(mgr)
    log.info("sandboxes recovered", extra={"count": len(store)})


async def _sweep(mgr: SandboxManager) -> None:
    known = {sb.id for sb in mgr.store}
    pinned = {p for sb in mgr.store for p in sb.pins.values()}
    cfg = mgr.cfg

    def local() -> None:
        for kind in NAMESPACE_KINDS:
            d = cfg.run_dir / "ns" / kind
            d.mkdir(parents=True, exist_ok=True, mode=0o711)
            for entry in d.iterdir():
                if str(entry) not in pinned:
                    log.warning("removing an orphaned namespace pin", extra={"path": str(entry)})
                    namespaces.unpin(str(entry))
        for base in (cfg.run_dir / "sandboxes", cfg.state_dir / "sandboxes"):
            for entry in base.iterdir() if base.is_dir() else []:
                if entry.name not in known:
                    log.warning("removing an orphaned sandbox directory", extra={"path": str(entry)})
                    shm = entry / "shm"
                    if os.path.ismount(shm):
                        files.unmount_shm(Path(shm))
                    shutil.rmtree(entry, ignore_errors=True)

    # Orphans are named by their directories and pins; their infra processes go first.
    bases = [cfg.run_dir / "sandboxes", cfg.state_dir / "sandboxes", *(cfg.run_dir / "ns" / k for k in NAMESPACE_KINDS)]
    orphans = ({e.name for base in bases if base.is_dir() for e in base.iterdir()} | mgr.resources.infra_ids()) - known
    for sandbox_id in sorted(orphans):
        await mgr.resources.release_orphan_infra(sandbox_id)
    # DEL before unpinning: a bridge plugin with its own ipMasq finds the pod's addresses (and so
    # its masquerade rules) through the pinned network namespace (chains that need no namespace
    # run DEL without it: cri_shim.network.pod).
    await mgr.resources.detach_unknown_networks(known)
    await asyncio.to_thread(local)
