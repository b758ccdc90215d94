"""The sandbox manager: RunPodSandbox, StopPodSandbox and RemovePodSandbox as ordered, durable steps.

Run persists the record (phase creating, naming every resource it will make) before the first
side effect and saves it again once the sandbox is ready, with its infra pid and IPs (a crash
before that leaves an infra process that its cgroup and the marker in its environment find, and
IPs in the CNI cache); any failure releases everything and deletes the record. A retried Run
with the same metadata and config joins the attempt in flight, or gets the id of the finished
sandbox; with another config it is
ALREADY_EXISTS, naming the sandbox that holds the name. Stop and Remove are idempotent and
succeed for unknown ids (not for empty or ambiguous ones). Reads (status, list) are served from
memory. A sandbox's own events go to the publisher the container manager registers, as
containerd sends them: CREATED then STARTED once it is ready, STOPPED when it turns notready
(Stop, or its infra process died), DELETED once its record is gone.
All pods' labels and annotations together are budgeted so that ListPodSandbox stays under the
gRPC message limit (cri_shim.listbudget): past it, RunPodSandbox is RESOURCE_EXHAUSTED.

A CNI DEL that fails does not fail Stop, Remove or a rollback. containerd fails StopPodSandbox
until DEL succeeds, but kubelet's garbage collector removes a pod only after its Stop
succeeded, so a plugin that never succeeds (one that cannot even be run, say) would keep the
pod, its namespaces, mounts, cgroups and record forever. Instead the failure is logged, what
the runtime owns is released, and the CNI cache entry is kept: every later Stop or Remove of
the pod runs DEL again, and once the record is gone start-up recovery does (for plugins that
find the pod's addresses through its network namespace, that retry runs without it).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf import json_format

from cri_shim.api import api_pb2 as api
from cri_shim.cgroups.migration import MigrationWarmer
from cri_shim.concurrency import Attempts, gather_all
from cri_shim.config import Config
from cri_shim.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound, clip
from cri_shim.linux import proc
from cri_shim.listbudget import ListBudget, entry_bytes
from cri_shim.network.cni import CniError
from cri_shim.network.pod import PodNetwork
from cri_shim.oci import bundlespec
from cri_shim.sandbox import recovery
from cri_shim.sandbox.containers import SandboxContainers
from cri_shim.sandbox.namespaces import SysctlFailed, pin_path
from cri_shim.sandbox.record import CREATING, NOTREADY, READY, Sandbox, reservation_name
from cri_shim.sandbox.resources import Resources
from cri_shim.sandbox.validate import PodPlan, plan
from cri_shim.store.records import RecordStore

log = logging.getLogger("cri_shim.sandbox")

# How long shutdown waits for abandoned creations to roll back.
ABANDON_WAIT = 30.0

# Publishes a sandbox's own event: (a ContainerEventType, the sandbox as it is now).
SandboxPublisher = Callable[[int, Sandbox], None]


class SandboxManager:
    """Owns the sandbox records and every pod-level resource."""

    def __init__(self, cfg: Config, network: PodNetwork, migrations: MigrationWarmer | None = None) -> None:
        self.cfg = cfg
        self.store: RecordStore[Sandbox] = RecordStore("sandbox", cfg.state_dir / "records" / "sandboxes", Sandbox)
        self.resources = Resources(cfg, network, migrations or MigrationWarmer(None))
        self.containers: SandboxContainers | None = None
        self._publish: SandboxPublisher = lambda event_type, sb: None
        self._attempts = Attempts()
        self.budget = ListBudget("pods", cfg.server.max_message_bytes,
                                 lambda: (entry_bytes(sb.config.labels, sb.config.annotations) for sb in self.store))

    def register_containers(self, containers: SandboxContainers) -> None:
        """Lets Stop and Remove stop and remove a sandbox's containers first."""
        self.containers = containers

    def register_events(self, publish: SandboxPublisher) -> None:
        """Sends the sandboxes' own events to the one event bus (the container manager owns it)."""
        self._publish = publish

    # -- reads ----------------------------------------------------------------------------

    def get(self, id_or_prefix: str) -> Sandbox:
        """The finished sandbox with this id or unique id prefix (NotFound otherwise)."""
        sb = self.store.resolve(id_or_prefix)
        if sb.phase == CREATING:
            raise NotFound(f"sandbox {id_or_prefix!r} not found")
        return sb

    def find(self, id_or_prefix: str) -> Sandbox | None:
        """Like get(), but None for unknown, ambiguous or unfinished ids."""
        sb = self.store.find(id_or_prefix)
        return sb if sb is not None and sb.phase != CREATING else None

    def list(self) -> list[Sandbox]:
        """Finished sandboxes, ready or not."""
        return [sb for sb in self.store if sb.phase != CREATING]

    def select(self, id_prefix: str = "", labels: dict[str, str] | None = None, state: int | None = None) -> list[Sandbox]:
        """The finished sandboxes a List filter names: id or unique id prefix, labels (all equal), state."""
        if id_prefix:
            found = self.find(id_prefix)
            candidates = [found] if found is not None else []
        else:
            candidates = self.list()
        return [sb for sb in candidates if (state is None or sb.state == state)
                and all(sb.config.labels.get(k) == v for k, v in (labels or {}).items())]

    @staticmethod
    def hostname(sb: Sandbox) -> str:
        """The pod's hostname: the one it asked for, else the node's (as RunPodSandbox set it)."""
        return sb.config.hostname or socket.gethostname()

    # -- RunPodSandbox --------------------------------------------------------------------

    async def run(self, config: api.PodSandboxConfig, runtime_handler: str) -> str:
        """Makes a ready sandbox, or returns the one this pod attempt already has."""
        pod = plan(config, runtime_handler, self.cfg, socket.gethostname())
        refusal = ("" if "user" not in pod.own_namespaces or self.containers is None
                   else self.containers.userns_refusal(runtime_handler))
        if refusal:
            handler = runtime_handler or self.cfg.runtime.default_handler
            raise FailedPrecondition(f"runtime handler {handler!r} does not support user namespaces on this host: "
                                     f"{clip(refusal)}")
        name = reservation_name(config.metadata)
        if name not in self._attempts:
            existing = self.store.by_name(name)
            if existing is not None:
                if existing.phase != READY:
                    raise AlreadyExists(f"sandbox name {name!r} is reserved by {existing.id} ({existing.phase})")
                _check_retry(existing, config, runtime_handler, self.cfg.runtime.default_handler)
                return existing.id
        sandbox_id = await self._attempts.join(name, lambda: self._create(name, config, runtime_handler, pod))
        made = self.store.get(sandbox_id)
        if made is not None:  # a retry that joined an attempt in flight must ask for the same pod too
            _check_retry(made, config, runtime_handler, self.cfg.runtime.default_handler)
        return sandbox_id

    async def _create(self, name: str, config: api.PodSandboxConfig, handler: str, pod: PodPlan) -> str:
        with self.budget.held(name, entry_bytes(config.labels, config.annotations)):
            return await self._make(name, config, handler, pod)

    async def _make(self, name: str, config: api.PodSandboxConfig, handler: str, pod: PodPlan) -> str:
        sandbox_id = secrets.token_hex(32)
        res = self.resources
        sb = Sandbox(
            id=sandbox_id,
            name=name,
            config=config,
            runtime_handler=handler,
            created_at=time.time_ns(),
            files_dir=str(res.files_dir(sandbox_id)),
            cgroup_driver=self.cfg.runtime.cgroup_driver,
            cgroup_parent=pod.cgroup_parent,
        )
        sb.pins = {kind: pin_path(self.cfg.run_dir, kind, sandbox_id) for kind in pod.own_namespaces}
        if pod.shm:
            sb.shm = str(res.volatile_dir(sandbox_id) / "shm")
        sb.infra_cgroup, sb.cgroup_dirs = res.plan_cgroups(sb, pod.pod_pid)
        started = time.perf_counter()
        async with self.store.lock(sandbox_id):
            await self.store.write(sb)  # names every resource before the first is made
            try:
                await self._build(sb, pod)
            except BaseException as exc:
                await self.rollback(sb, exc)
                mapped = _as_cri_error(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
        log.info(
            "sandbox ready",
            extra={"sandbox": sandbox_id, "pod": name, "ips": sb.ips, "ms": round((time.perf_counter() - started) * 1000, 2)},
        )
        return sandbox_id

    async def _build(self, sb: Sandbox, pod: PodPlan) -> None:
        res = self.resources
        await res.make_files(sb, pod)
        if sb.shm is not None:
            await res.make_shm(sb)
        if sb.infra_cgroup is not None:
            await res.make_infra_cgroup(sb)
        await res.make_namespaces(sb, pod)
        steps = []
        if sb.infra_cgroup is not None:
            steps.append(self._start_infra(sb))
        if not sb.host_network:
            steps.append(self._attach_network(sb, pod))
        await gather_all(steps)  # the infra container starts while CNI runs
        await res.write_hosts(sb, pod.hostname)
        if sb.infra is not None and not proc.is_alive(sb.infra.pid, sb.infra.start_time):
            # Its PID namespace died with it: answering READY would hand kubelet a pod no container can join.
            raise Internal(f"the pod's infra process ({self.cfg.runtime.infra}) exited during sandbox setup")
        sb.phase = READY
        await self.store.write(sb)
        self._publish(api.CONTAINER_CREATED_EVENT, sb)
        self._publish(api.CONTAINER_STARTED_EVENT, sb)
        self.watch_infra(sb)

    async def _start_infra(self, sb: Sandbox) -> None:
        sb.infra = await self.resources.start_infra(sb)

    async def _attach_network(self, sb: Sandbox, pod: PodPlan) -> None:
        sb.ips = await self.resources.attach_network(sb, pod)

    async def rollback(self, sb: Sandbox, cause: BaseException) -> None:
        log.warning("sandbox creation failed, rolling back", extra={"sandbox": sb.id, "error": str(cause)})
        try:
            await self._release(sb)
            await self.store.erase(sb.id)
        except Exception:  # noqa: BLE001 - kept as notready and listed, so Remove can finish the job
            log.exception("rollback incomplete, sandbox kept as notready", extra={"sandbox": sb.id})
            sb.phase = NOTREADY
            await self.store.write(sb)

    # -- StopPodSandbox / RemovePodSandbox ------------------------------------------------

    async def stop(self, id_or_prefix: str) -> None:
        """Stops the sandbox's containers, kills its infra process, releases its network."""
        await self._locked(id_or_prefix, self._stop)

    async def remove(self, id_or_prefix: str) -> None:
        """Removes the sandbox and everything it holds; unknown ids are already removed."""
        await self._locked(id_or_prefix, self._remove)

    async def _locked(self, id_or_prefix: str, action: Callable[[Sandbox], Awaitable[None]]) -> None:
        """Runs action on the finished sandbox under its lock; nothing for unknown (or just removed)
        ids, InvalidArgument for empty and ambiguous ones."""
        sb = self.store.existing(id_or_prefix)
        if sb is None or sb.phase == CREATING:
            return
        async with self.store.lock(sb.id):
            if self.store.get(sb.id) is not None:
                await action(sb)

    async def _stop(self, sb: Sandbox) -> None:
        # CNI DEL runs beside the end of the pod's processes, where containerd and CRI-O wait for
        # the containers' exits first: DEL needs none of them (the network namespace is pinned by
        # the sandbox, not held by a process), and none may use the network once Stop is asked.
        # Where the cached chain needs no namespace for DEL, the namespace is unpinned first and
        # the kernel deletes the pod's interface once the processes are gone (Resources.detach_network).
        network = asyncio.ensure_future(self._release_network(sb))
        try:
            await self._end_processes(sb)
        finally:
            released = await network
        if released and sb.ips:
            sb.ips = []  # released to IPAM: another pod may get them
            await self.store.write(sb)

    async def _end_processes(self, sb: Sandbox) -> None:
        """Kills the pod's containers and its infra process; the pod turns NOTREADY."""
        if self.containers is not None:
            await self.containers.stop_sandbox_containers(sb.id)
        await self.resources.kill_infra(sb)
        was_ready = sb.phase == READY
        if was_ready or sb.infra is not None:
            sb.phase = NOTREADY
            sb.infra = None  # its pid may be reused: no PID namespace path must point there
            await self.store.write(sb)
        if was_ready:
            self._publish(api.CONTAINER_STOPPED_EVENT, sb)

    async def _remove(self, sb: Sandbox) -> None:
        await self._stop(sb)
        if self.containers is not None:
            await self.containers.remove_sandbox_containers(sb.id)
        await self.resources.release_local(sb)
        await self.store.erase(sb.id)
        self._publish(api.CONTAINER_DELETED_EVENT, sb)
        log.info("sandbox removed", extra={"sandbox": sb.id})

    async def _release(self, sb: Sandbox) -> None:
        """Releases everything the record names; each step tolerates what is already gone."""
        await self.resources.kill_infra(sb)
        await self._release_network(sb)
        await self.resources.release_local(sb)

    async def _release_network(self, sb: Sandbox) -> bool:
        """CNI DEL of the pod's attachment: True once released; False (logged, the cache entry
        kept for the next try) when DEL failed."""
        try:
            await self.resources.detach_network(sb)
        except CniError as exc:
            log.error("pod network not released, CNI DEL will be retried", extra={"sandbox": sb.id, "error": str(exc)})
            return False
        return True

    # -- infra exits, recovery, shutdown --------------------------------------------------

    def watch_infra(self, sb: Sandbox) -> None:
        if sb.infra is not None and not self.resources.infra.watch(sb.id, sb.infra, self._infra_exited):
            self._infra_exited(sb.id)

    def _infra_exited(self, sandbox_id: str) -> None:
        asyncio.get_running_loop().create_task(self._mark_notready(sandbox_id))

    async def _mark_notready(self, sandbox_id: str) -> None:
        async with self.store.lock(sandbox_id):
            sb = self.store.get(sandbox_id)
            if sb is not None and sb.phase == READY:
                sb.phase = NOTREADY
                await self.store.write(sb)
                self._publish(api.CONTAINER_STOPPED_EVENT, sb)
                log.warning("sandbox not ready: its infra process is gone", extra={"sandbox": sandbox_id})

    async def recover(self) -> None:
        """Reconciles records with the system: rolls back half-made sandboxes, checks finished ones."""
        await recovery.recover(self)

    async def close(self) -> None:
        """Abandons creations in flight (rolling them back) and stops watching infra processes."""
        await self._attempts.abandon(ABANDON_WAIT)
        self.resources.close()

    def verbose_info(self, sb: Sandbox) -> dict[str, object]:
        """The extra facts PodSandboxStatus(verbose) reports, with containerd's names where it has
        them: runtimeType is the OCI runtime binary of the pod's handler (containerd names its
        shim type there), runtimeSpec the infra container's spec (bounded: bundlespec), which
        only a pod with a PID namespace of its own has: the others run no process of their own."""
        infra = bundlespec.verbose_entries(self.resources.infra_bundle(sb.id),
                                           bundlespec.spec_limit(self.cfg.server.max_message_bytes)) if sb.infra else {}
        ids = sb.id_mappings
        return {
            **({"userNamespace": {"path": sb.pins["user"], **ids.oci(),
                                  "idmappedMounts": "made by cri-shim: the containers' roots are overlays over "
                                                    "idmapped layers, the pod's files, /dev/shm and CRI mounts "
                                                    "with mappings are idmapped binds"}}
               if ids is not None and "user" in sb.pins else {}),
            "id": sb.id,
            "phase": sb.phase,
            "pid": sb.infra.pid if sb.infra else 0,
            "infraStartTime": sb.infra.start_time if sb.infra else 0,
            "namespaces": {**sb.pins, **({"pid": sb.pid_namespace_path()} if sb.infra else {})},
            "netNamespaceClosed": self.resources.netns_closed(sb),
            "cgroupDriver": sb.cgroup_driver,
            "cgroupParent": sb.cgroup_parent,
            "infraCgroupsPath": sb.infra_cgroup or "",
            "files": str(Path(sb.files_dir)),
            "shm": sb.shm or "",
            "runtimeHandler": sb.runtime_handler,
            "runtimeType": self.resources.infra.runtime_binary(sb.runtime_handler),
            "config": json_format.MessageToDict(sb.config),
            "cniResult": self.resources.network_result(sb.id),
            **infra,
        }


def _check_retry(sb: Sandbox, config: api.PodSandboxConfig, runtime_handler: str, default_handler: str) -> None:
    """A RunPodSandbox for a name that has a sandbox is a retry only when it asks for the same
    pod (the same config bytes, serialized deterministically, and handler, "" meaning the
    default); anything else would be answered with a sandbox that ignores what was asked."""
    if ((sb.runtime_handler or default_handler) != (runtime_handler or default_handler)
            or sb.config.SerializeToString(deterministic=True) != config.SerializeToString(deterministic=True)):
        raise AlreadyExists(f"sandbox name {sb.name!r} is reserved by {sb.id} ({sb.phase}), "
                            "made with a different config or runtime handler")


def _as_cri_error(exc: BaseException) -> BaseException:
    if isinstance(exc, SysctlFailed):
        return InvalidArgument(str(exc))
    if isinstance(exc, CniError):
        return Internal(f"pod network setup failed: {exc}")
    if isinstance(exc, OSError):
        return Internal(f"sandbox setup failed: {exc}")
    return exc
