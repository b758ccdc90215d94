"""Making and releasing the resources of one sandbox, each step idempotent on release.

The manager decides the order and owns the record: it writes what these steps return (the
cgroups to make and prune, the infra process, the pod's IPs) and persists it. This module does
the system work: files, /dev/shm, the infra cgroup, namespaces, the infra container, the CNI
attachment. Every release step succeeds when its resource is already gone, so a rollback, a
retried Stop or Remove, and start-up recovery all run the same code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from cri_shim.cgroups import hierarchy, normalize_parent, relative_path
from cri_shim.cgroups.migration import MigrationWarmer
from cri_shim.cgroups.paths import parent_path
from cri_shim.config import Config
from cri_shim.linux import proc
from cri_shim.network.cni import result_ips
from cri_shim.network.pod import PodNetwork, PodRef
from cri_shim.sandbox import files, infra, namespaces
from cri_shim.sandbox.record import CREATING, Infra, Sandbox
from cri_shim.sandbox.validate import PodPlan

log = logging.getLogger("cri_shim.sandbox")


class Resources:
    """The system side of sandboxes: what the manager's steps call."""

    def __init__(self, cfg: Config, network: PodNetwork, migrations: MigrationWarmer) -> None:
        self.cfg = cfg
        self.network = network
        self.migrations = migrations
        self.infra = infra.InfraContainers(cfg)
        self._hierarchies: hierarchy.Hierarchies | None = None
        # Cgroup creation and pruning of shared parents must not interleave.
        self._cgroup_lock = asyncio.Lock()

    @property
    def hierarchies(self) -> hierarchy.Hierarchies:
        if self._hierarchies is None:
            self._hierarchies = hierarchy.detect()
        return self._hierarchies

    def files_dir(self, sandbox_id: str) -> Path:
        return self.cfg.state_dir / "sandboxes" / sandbox_id

    def volatile_dir(self, sandbox_id: str) -> Path:
        return self.cfg.run_dir / "sandboxes" / sandbox_id

    def infra_bundle(self, sandbox_id: str) -> Path:
        """The bundle of the sandbox's infra container (when its pod has a PID namespace of its own)."""
        return self.volatile_dir(sandbox_id) / "infra"

    def plan_cgroups(self, sb: Sandbox, pod_pid: bool) -> tuple[str | None, list[str]]:
        """The infra cgroup (None without a pod PID namespace) and every cgroup directory to prune
        on removal, for the record.

        With the systemd driver there is none to prune: systemd owns its tree. runc's systemd
        driver has it make the infra process's scope, systemd removes a scope once it is empty,
        and slices are its units, never directories of ours.
        """
        h = self.hierarchies
        dirs: list[str] = []
        infra_cgroup = sb.cgroups_path(sb.id) if pod_pid else None
        if sb.cgroup_driver == "systemd":
            return infra_cgroup, []
        if infra_cgroup is not None:
            leaf = relative_path(sb.cgroup_driver, infra_cgroup)
            dirs += hierarchy.missing_dirs(h, leaf) + h.dirs(leaf)
        if not sb.config.linux.cgroup_parent:
            # The runtime's own default parent holds no one else's cgroups: prune it when empty.
            dirs += h.dirs(sb.pod_cgroup())
        return infra_cgroup, sorted(set(dirs))

    # -- making ---------------------------------------------------------------------------

    async def make_files(self, sb: Sandbox, plan: PodPlan) -> None:
        dns = sb.config.dns_config if sb.config.HasField("dns_config") else None
        await asyncio.to_thread(files.write_identity, Path(sb.files_dir), plan.hostname, dns)

    async def make_shm(self, sb: Sandbox) -> None:
        assert sb.shm is not None
        await asyncio.to_thread(files.mount_shm, Path(sb.shm), self.cfg.runtime.pod_shm_size_bytes)

    async def make_infra_cgroup(self, sb: Sandbox) -> None:
        """Makes the infra process's cgroup ahead of runc (cgroupfs); under the systemd driver
        runc has systemd make its scope."""
        assert sb.infra_cgroup is not None
        if sb.cgroup_driver == "systemd":
            return
        path = relative_path(sb.cgroup_driver, sb.infra_cgroup)
        async with self._cgroup_lock:
            await asyncio.to_thread(hierarchy.create, self.hierarchies, path)

    async def make_namespaces(self, sb: Sandbox, plan: PodPlan) -> None:
        """Pins the namespaces, with the pod's hostname and sysctls."""
        await namespaces.make(namespaces.NamespaceSpec(pins=dict(sb.pins), hostname=plan.hostname, sysctls=plan.sysctls,
                                                       ids=sb.id_mappings))

    async def start_infra(self, sb: Sandbox) -> Infra:
        """Runs the infra container in the pinned namespaces and its cgroup; returns its process."""
        with self.migrations.held():  # runc moves the infra process into its cgroups
            return await self.infra.start(sb, self.infra_bundle(sb.id))

    async def attach_network(self, sb: Sandbox, plan: PodPlan) -> list[str]:
        """Attaches the pod's network namespace through CNI; returns the pod's IPs."""
        meta = sb.metadata
        pod = PodRef(name=meta.name, namespace=meta.namespace, uid=meta.uid)
        return await self.network.attach(sb.id, sb.pins["net"], pod, list(plan.ports))

    async def write_hosts(self, sb: Sandbox, hostname: str) -> None:
        await asyncio.to_thread(files.write_hosts, Path(sb.files_dir), hostname, sb.ips, sb.host_network)

    # -- releasing ------------------------------------------------------------------------

    async def kill_infra(self, sb: Sandbox) -> None:
        """Kills the infra process, and anything left in its cgroup or carrying its marker.

        A sandbox still being made may have an infra process whose pid a crash kept from the
        record (and from the cgroup): the marker in its environment finds it.
        """
        strays: set[int] = set()
        if sb.infra_cgroup is not None:
            strays = hierarchy.processes(self.hierarchies, relative_path(sb.cgroup_driver, sb.infra_cgroup))
            if sb.phase == CREATING and sb.infra is None:
                strays.update(await asyncio.to_thread(proc.with_environment, infra.marker(sb.id)))
        await self.infra.stop(sb.id, sb.infra, strays)

    async def release_orphan_infra(self, sandbox_id: str) -> None:
        """Kills the infra process of a sandbox no record names (found by its marker) and prunes
        its cgroup, and the runtime's default parent when that is left empty."""
        pids = set(await asyncio.to_thread(proc.with_environment, infra.marker(sandbox_id)))
        if not pids and sandbox_id not in self.infra.known():
            return
        leaves = {leaf for pid in pids if (leaf := _cgroup_of(pid, sandbox_id)) is not None}
        await self.infra.stop(sandbox_id, None, pids)
        driver = self.cfg.runtime.cgroup_driver
        if driver == "systemd":  # systemd removed the scope when the process died
            return
        default = parent_path(driver, normalize_parent(driver, self.cfg.runtime.default_cgroup_parent))
        dirs = [d for leaf in leaves for d in self.hierarchies.dirs(leaf)] + self.hierarchies.dirs(default)
        async with self._cgroup_lock:
            await asyncio.to_thread(hierarchy.prune, dirs)

    async def detach_network(self, sb: Sandbox) -> None:
        """CNI DEL of the pod's attachment; where its cached chain needs no namespace for that, the
        pod's network namespace is unpinned first (cri_shim.network.pod), and the kernel removes
        the pod's interface with it once the pod's processes are gone."""
        net = sb.pins.get("net")
        await self.network.detach(sb.id, (lambda: self.unpin(net)) if net is not None else None)

    async def unpin(self, *paths: str) -> None:
        """Unpins namespaces, on a worker thread (the one place a pod's pins are removed)."""
        def work() -> None:
            for path in paths:
                namespaces.unpin(path)

        await asyncio.to_thread(work)

    @staticmethod
    def netns_closed(sb: Sandbox) -> bool:
        """Whether the pod's network namespace pin is gone (unpinned at Stop, or never made)."""
        net = sb.pins.get("net")
        return net is None or not os.path.exists(net)

    def network_result(self, sandbox_id: str) -> dict[str, Any] | None:
        """The CNI result the pod's attachment cached, or None."""
        return self.network.cached_result(sandbox_id)

    def cached_ips(self, sandbox_id: str) -> list[str]:
        """The pod's IPs as its cached CNI result names them; none without one."""
        return result_ips(self.network_result(sandbox_id))

    def infra_ids(self) -> set[str]:
        """Sandbox ids some runtime handler still holds infra container state for."""
        return set(self.infra.known())

    async def detach_unknown_networks(self, known: set[str]) -> None:
        """Detaches cached attachments no sandbox in known owns."""
        await self.network.sweep(known)

    async def release_local(self, sb: Sandbox) -> None:
        """Unpins namespaces, unmounts /dev/shm, prunes cgroups and removes the sandbox's files."""

        def work() -> None:
            if sb.shm is not None:
                files.unmount_shm(Path(sb.shm))
            shutil.rmtree(self.volatile_dir(sb.id), ignore_errors=True)
            shutil.rmtree(sb.files_dir, ignore_errors=True)

        await self.unpin(*sb.pins.values())
        await asyncio.to_thread(work)
        async with self._cgroup_lock:
            await asyncio.to_thread(hierarchy.prune, sb.cgroup_dirs)

    def close(self) -> None:
        self.infra.close()


def _cgroup_of(pid: int, sandbox_id: str) -> str | None:
    """The cgroup (below the hierarchy roots) a process of the sandbox sits in, by its name."""
    return next((p for p in hierarchy.paths_of(pid) if sandbox_id in p.rsplit("/", 1)[-1]), None)
