"""Start-up reconciliation of container records with runc, the monitors and the exit files.

The matrix follows containerd's restart.go: a record whose create was interrupted
(created_at 0) is discarded with everything it may have left; an exit recorded while the
daemon was down is applied; a container runc reports running while its record says created
was started just before a crash; a live container's memory.events is watched again
(cri_shim.cgroups.oomwatch); bundles and exit files no record owns are removed, and so
are idmapped sources (attached only while a create runs). Every container's log is picked up
again first (what it wrote while the daemon was down is in its monitor's pipe), so an exit
recorded here finds its output in the log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cri_shim.errors import NotFound
from cri_shim.runtime import idmounts
from cri_shim.runtime.record import CONTAINER_CREATED, ContainerRecord

if TYPE_CHECKING:
    from cri_shim.runtime.containers import ContainerRuntime

log = logging.getLogger("cri_shim.runtime")


async def recover(rt: ContainerRuntime) -> None:
    """Reconciles every record, then sweeps what no record owns."""
    known = set()
    for record in rt.store:
        known.add(record.id)
        if not record.created_at:
            log.info("discarding a container whose creation was interrupted", extra={"container": record.id})
            try:
                await rt.discard(record)
            except Exception:  # noqa: BLE001 - kept; RemoveContainer retries the delete
                log.exception("could not discard an interrupted container", extra={"container": record.id})
            continue
        rt.monitor.recover_log(record.id, Path(record.bundle), rt.log_file(record))
        record = rt.refresh(record)
        if record.state == CONTAINER_CREATED:
            await _adopt_started(rt, record)
        if not record.finished_at:
            rt.oom.watch(record.cgroups_path, Path(record.bundle))
    idmounts.release_all(rt.idmap_root)
    rt.bundle_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for bundle in rt.bundle_root.iterdir():
        if bundle.name not in known:
            log.info("removing an orphaned bundle", extra={"container": bundle.name})
            for runc in rt.runtimes.values():
                await runc.delete(bundle.name)
            await rt.drop_files(bundle.name, bundle)
    rt.monitor.sweep_exits(known)


async def _adopt_started(rt: ContainerRuntime, record: ContainerRecord) -> None:
    """A start that ran but was not recorded (crash between `runc start` and the save).

    Under the record's lock, as a start is recorded, and decided on the record as stored once
    runc has answered: the container may exit while runc answers, and an exit recorded meanwhile
    (by a status poll) must stay recorded; the exit watcher's task waits for the lock and then
    records the exit after the start."""
    async with rt.store.lock(record.id):
        try:
            state = await rt.runc(record).state(record.id)
        except NotFound:
            return
        current = rt.store.get(record.id)
        if current is not None and current.state == CONTAINER_CREATED and state.get("status") in ("running", "paused"):
            rt.store.save(replace(current, started_at=time.time_ns()))
