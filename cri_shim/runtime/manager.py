"""The container manager: the one owner of a container, and the one face the RPCs talk to.

It owns a container's lifecycle: its record (looked up by id or unique prefix here only),
its events, and the order of what is made and released. ContainerRuntime (containers.py) is
the runc/conmon layer below it: handed records, it runs a container from a SandboxInfo, a rootfs
and an image config, and knows nothing of sandboxes or images. This module joins the three: it
plans a CreateContainer (cri_shim.runtime.plan), mounts the container's overlay rootfs and its
image volumes, describes the pod to the spec builder, and gives the sandbox manager the hooks
that stop and remove a pod's containers. Rules it keeps:
- a retried CreateContainer with the same name joins the attempt in flight, or gets the id
  of the container it made (kubelet retries a create whose answer it did not get);
- the rootfs and image volumes are mounted before `runc create`, unmounted (with runc's state
  deleted) when the container exits (cri_shim.runtime.exitrelease) and released beside the
  removal of the record, once nothing of the container runs, so a container directory nothing
  refers to is a leftover of a crash and is released at start-up;
- a container's name, labels and annotations are bounded as a pod's (cri_shim.metadata), and
  all containers' together by a budget that keeps ListContainers and ListContainerStats under
  the gRPC message limit (cri_shim.listbudget): past it, CreateContainer is RESOURCE_EXHAUSTED;
- the CDI devices a container asks for are resolved against the spec files before its rootfs
  is made, so an unknown or ambiguous one leaves nothing behind (cri_shim.cdi);
- events (created, started, stopped, deleted) go to every GetContainerEvents subscriber; the
  runtime records starts and exits and tells the manager, which publishes them, a start always
  before its exit.
  The sandbox manager's own events for a pod go to the same bus, with the pod's containers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from cri_shim.api import api_pb2 as api
from cri_shim.cdi.registry import Registry
from cri_shim.cgroups.migration import MigrationWarmer
from cri_shim.concurrency import Attempts, gather_all
from cri_shim.config import Config
from cri_shim.idmappings import IdMappings
from cri_shim.errors import FailedPrecondition, NotFound
from cri_shim.image.imagevolumes import ImageVolumes
from cri_shim.image.rootfs import Rootfs
from cri_shim.image.store import ImageStore
from cri_shim.listbudget import ListBudget, entry_bytes
from cri_shim.oci.context import SandboxInfo
from cri_shim.runtime.containers import ContainerRuntime
from cri_shim.runtime import features, plan
from cri_shim.runtime.events import Event, EventBus, SandboxChange
from cri_shim.runtime.execsync import ExecResult
from cri_shim.runtime.exitrelease import ExitRelease
from cri_shim.runtime.features import HandlerFeatures, UsernsCheck
from cri_shim.runtime.plan import ContainerPlan
from cri_shim.sandbox import Sandbox, SandboxManager
from cri_shim.runtime.record import CONTAINER_CREATED, CONTAINER_RUNNING, ContainerRecord

log = logging.getLogger("cri_shim.containers")

# How long shutdown waits for abandoned creates to roll back.
ABANDON_WAIT = 30.0
# How long a sandbox's containers get between SIGKILL and their exit being recorded.
POD_STOP_TIMEOUT = 0.0


class ContainerManager:
    """Creates, runs and removes containers in sandboxes, from images in the store."""

    def __init__(self, cfg: Config, sandboxes: SandboxManager, images: ImageStore, rootfs: Rootfs,
                 runtime: ContainerRuntime, migrations: MigrationWarmer) -> None:
        self.cfg = cfg
        self.sandboxes = sandboxes
        self.images = images
        self.rootfs = rootfs
        self.image_volumes = ImageVolumes(images, rootfs)
        self.cdi = Registry(cfg.runtime.cdi_spec_dirs)
        self.runtime = runtime
        # The records, persisted by the runtime as it acts; every lookup by id or prefix is here.
        self.store = runtime.store
        self.rootfs_root = cfg.state_dir / "rootfs"
        self.events = EventBus()
        self._attempts = Attempts()
        self.budget = ListBudget("containers", cfg.server.max_message_bytes,
                                 lambda: (entry_bytes(r.config.labels, r.config.annotations) for r in self.store))
        # What each runtime handler offers (Status, CreateContainer), asked of it at start-up.
        self._features: dict[str, HandlerFeatures] = {}
        # Whether this host runs pods in user namespaces (for every handler), from the start-up probe.
        self.userns = UsernsCheck(offered=False, problem="not probed yet")
        self.migrations = migrations
        self.exit_release = ExitRelease(self.store, lambda r: runtime.runc(r).delete(r.id), rootfs,
                                        self.image_volumes, self.rootfs_root)
        runtime.subscribe(self.events.publish)
        runtime.subscribe(self.exit_release.on_event)
        sandboxes.register_containers(self)
        sandboxes.register_events(self._publish_sandbox)

    # -- start-up and shutdown ------------------------------------------------------------

    async def open(self) -> None:
        """Reconciles container records, then releases what no record owns.

        Runs after sandbox recovery: a container whose sandbox did not survive it is removed,
        as RemovePodSandbox would have done.
        """
        # Searchable (not listable) by all: a pod's root in a user namespace is an unprivileged host
        # user, and the handler reaches the container's root (<id>/rootfs) as that user.
        self.rootfs_root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.rootfs_root.chmod(0o711)
        self.userns = await features.probe_userns(self.rootfs, self.rootfs_root,
                                                  [self.rootfs_root, self.cfg.run_dir / "infra"])
        for name, runtime in self.runtime.runtimes.items():
            self._features[name] = await features.detect(runtime, self.userns.offered)
        await self.runtime.open()
        for record in self.store:
            if self.sandboxes.store.get(record.sandbox_id) is None:
                log.info("removing a container whose sandbox is gone", extra={"container": record.id})
                await self._remove(record)
        for container_dir in self.rootfs_root.iterdir():
            if self.store.get(container_dir.name) is None:
                log.info("releasing an orphaned rootfs", extra={"container": container_dir.name})
                await self._release_rootfs(container_dir.name)
        await self.exit_release.reconcile(self.store)

    async def close(self) -> None:
        """Abandons creates in flight (they roll back) and stops watching exits."""
        await self._attempts.abandon(ABANDON_WAIT)
        self.events.close()
        self.runtime.close()
        await self.exit_release.close()

    # -- reads ----------------------------------------------------------------------------

    def get(self, id_or_prefix: str) -> ContainerRecord:
        """The container's current record (NotFound for unknown ids; unique prefixes allowed)."""
        record = self.runtime.refresh(self.store.resolve(id_or_prefix))
        if not record.created_at:
            raise NotFound(f"container {id_or_prefix!r} not found")
        return record

    def list(self) -> list[ContainerRecord]:
        """Every created container, refreshed with any exit recorded since."""
        return [self.runtime.refresh(r) for r in self.store if r.created_at]

    def select(self, id_prefix: str = "", sandbox_prefix: str = "", labels: dict[str, str] | None = None,
               state: int | None = None) -> list[ContainerRecord]:
        """The containers a List filter names; ids and sandbox ids may be unique prefixes."""
        if id_prefix:
            found = self.store.find(id_prefix)
            records = [self.runtime.refresh(found)] if found is not None and found.created_at else []
        else:
            records = self.list()
        if sandbox_prefix:
            sb = self.sandboxes.store.find(sandbox_prefix)
            records = [r for r in records if sb is not None and r.sandbox_id == sb.id]
        return [r for r in records if (state is None or r.state == state)
                and all(r.config.labels.get(k) == v for k, v in (labels or {}).items())]

    def running(self, id_or_prefix: str) -> ContainerRecord:
        """The record of a running container (NotFound, or FailedPrecondition when not running)."""
        return self.get(id_or_prefix).running()

    def measurable(self, id_or_prefix: str) -> ContainerRecord:
        """The record of a container that has metrics, i.e. a running one; NotFound for one not
        started yet or exited, as containerd answers (it has metrics only for a live task) rather
        than report counters of a cgroup that is gone or empty."""
        record = self.get(id_or_prefix)
        if record.state != CONTAINER_RUNNING:
            state = api.ContainerState.Name(record.state).removeprefix("CONTAINER_").lower()
            raise NotFound(f"no metrics for container {record.id}: it is not running ({state})")
        return record

    def running_of_sandbox(self, sandbox_id: str) -> list[ContainerRecord]:
        """The pod's containers running now, their state refreshed from their monitors."""
        refreshed = (self.runtime.refresh(r) for r in self.of_sandbox(sandbox_id) if r.created_at)
        return [r for r in refreshed if r.state == CONTAINER_RUNNING]

    def verbose_info(self, record: ContainerRecord) -> dict[str, object]:
        """What verbose ContainerStatus reports beside the status (ContainerRuntime.verbose_info)."""
        return self.runtime.verbose_info(record)

    async def writable_usage(self, record: ContainerRecord) -> tuple[Path, int, int]:
        """The directory of the container's writable layer, and the bytes and inodes it uses."""
        layer = self.rootfs_root / record.id
        used, inodes = await self.rootfs.writable_usage(layer)
        return layer, used, inodes

    # -- UpdateContainerResources, ReopenContainerLog, ExecSync ---------------------------

    async def update_resources(self, id_or_prefix: str, res: api.LinuxContainerResources) -> None:
        await self.runtime.update_resources(self.get(id_or_prefix), res)

    async def reopen_log(self, id_or_prefix: str) -> None:
        await self.runtime.reopen_log(self.get(id_or_prefix))

    async def exec_sync(self, id_or_prefix: str, argv: list[str], timeout: float | None) -> ExecResult:
        return await self.runtime.exec_sync(self.get(id_or_prefix), argv, timeout)

    # -- CreateContainer ------------------------------------------------------------------

    async def create(self, sandbox_id: str, config: api.ContainerConfig | None) -> str:
        """Makes a CREATED container, or returns the one this name already has.

        Everything about the pod (privileged, log_directory, sysctls, names) is read from the
        stored sandbox, never from the sandbox_config a CreateContainer request carries: that
        copy is the caller's word, and a client could claim a privileged pod with it. The
        request is checked whole (cri_shim.runtime.plan) before anything is made.
        """
        config = plan.check_request(sandbox_id, config)
        sb = self.sandboxes.get(sandbox_id)
        if sb.state != api.SANDBOX_READY:
            raise FailedPrecondition(f"sandbox {sb.id} is not ready")
        name = plan.container_name(config, sb)
        if name not in self._attempts:
            existing = self.store.by_name(name)
            if existing is not None and existing.created_at:
                return existing.id
        handler = self.handler(sb)
        made = await plan.plan(config, sb, handlers=self.runtime.runtimes.keys(), handler=handler,
                               handler_features=self.features(handler), images=self.images,
                               image_volumes=self.image_volumes, cdi=self.cdi, target=self.running)
        return await self._attempts.join(name, lambda: self._create(made))

    async def _create(self, made: ContainerPlan) -> str:
        with self.budget.held(made.name, entry_bytes(made.config.labels, made.config.annotations)):
            with self.migrations.held():  # from the start: its first wait overlaps the rootfs, spec and conmon
                return await self._make(made)

    async def _make(self, made: ContainerPlan) -> str:
        sb, image = made.sandbox, made.image
        container_id = secrets.token_hex(32)
        container_dir = self.rootfs_root / container_id
        try:
            userns = self._userns(sb)
            rootfs = await self.rootfs.prepare(image.image_id, container_dir, userns)
            config = await self.image_volumes.mount(container_dir, made.config, made.volume_images, userns)
            record = await self.runtime.create(
                container_id=container_id, name=made.name, sandbox=self.sandbox_info(sb), sandbox_config=sb.config,
                config=config, image=made.image_config, rootfs=rootfs,
                image_name=_image_name(config, image.image_id, image.repo_tags), image_ref=image.image_id,
                image_id=image.image_id, runtime_handler=made.handler, log_path=made.log_path,
                target_pid_ns=made.target_pid_ns, cdi_edits=made.cdi_edits,
            )
        except BaseException:
            if self.store.get(container_id) is None:
                await self._release_rootfs(container_id)
            raise
        self.events.publish(api.CONTAINER_CREATED_EVENT, record)
        return container_id

    @staticmethod
    def _userns(sb: Sandbox) -> tuple[str, IdMappings] | None:
        path, ids = sb.namespace_path("user"), sb.id_mappings
        return (path, ids) if path is not None and ids is not None else None

    def userns_refusal(self, handler: str) -> str:
        """Why pods of the handler may not have user namespaces, "" when they may (SandboxContainers):
        the start-up probe's finding, for the operator to read in the pod's events."""
        if self.features(handler or self.cfg.runtime.default_handler).user_namespaces:
            return ""
        return self.userns.problem or "the runtime does not offer them"

    def features(self, handler: str) -> HandlerFeatures:
        """What a runtime handler offers (nothing for one that is not configured)."""
        return self._features.get(handler, HandlerFeatures())

    def handler(self, sb: Sandbox) -> str:
        """The OCI runtime handler of the sandbox's containers ("" is the default one)."""
        return sb.runtime_handler or self.cfg.runtime.default_handler

    def sandbox_info(self, sb: Sandbox) -> SandboxInfo:
        """The pod as the spec builder sees it: pinned namespaces, pod files, cgroup parent."""
        files = Path(sb.files_dir)
        return SandboxInfo(
            id=sb.id,
            host_network=sb.host_network,
            host_ipc=sb.namespace_options.ipc == api.NODE,
            host_pid=sb.namespace_options.pid == api.NODE,
            pod_pid=sb.namespace_options.pid == api.POD,
            hostname=self.sandboxes.hostname(sb),
            netns_path=sb.namespace_path("net"),
            ipc_ns_path=sb.namespace_path("ipc"),
            uts_ns_path=sb.namespace_path("uts"),
            pid_ns_path=sb.pid_namespace_path(),
            hostname_path=str(files / "hostname"),
            hosts_path=str(files / "hosts"),
            resolv_conf_path=str(files / "resolv.conf"),
            shm_path=sb.shm,
            cgroup_parent=sb.cgroup_parent,
            systemd_cgroup=sb.cgroup_driver == "systemd",
            sysctls=dict(sb.config.linux.sysctls),
            userns_path=sb.namespace_path("user"),
            id_mappings=sb.id_mappings,
        )

    # -- Start, Stop, Remove --------------------------------------------------------------

    async def start(self, id_or_prefix: str) -> None:
        """Starts a created container (the runtime publishes its started and stopped events)."""
        await self.runtime.start(self.get(id_or_prefix))

    async def stop(self, id_or_prefix: str, timeout: float) -> None:
        """Stops the container (unknown or finished ones are already stopped; empty and
        ambiguous ids are refused)."""
        record = self.store.existing(id_or_prefix)
        if record is not None:
            await self.runtime.stop(record, timeout)

    async def remove(self, id_or_prefix: str) -> None:
        """Removes the container and its rootfs; unknown ids are already removed (empty and
        ambiguous ones are refused)."""
        record = self.store.existing(id_or_prefix)
        if record is not None:
            await self._remove(record)

    async def _remove(self, record: ContainerRecord) -> None:
        """The container's root is released beside the removal of its record, once the container
        and its runtime state are gone: a crash between the two leaves either an exited
        container's record, which a RemoveContainer finishes, or a root no record owns, which
        start-up releases. The exit-time release is kept to the runtime delete meanwhile, and
        needs no settling: it holds the record's lock, which the removal holds now."""
        with self.exit_release.removing(record.id):
            await self.runtime.remove(record, lambda: self._release_root(record.id))
        self.events.publish(api.CONTAINER_DELETED_EVENT, record)

    async def _release_rootfs(self, container_id: str) -> None:
        await self.exit_release.settle(container_id)
        await self._release_root(container_id)

    async def _release_root(self, container_id: str) -> None:
        container_dir = self.rootfs_root / container_id
        await self.image_volumes.release(container_dir)
        await self.rootfs.release(container_dir)
        await asyncio.to_thread(shutil.rmtree, container_dir, True)

    # -- the SandboxContainers hooks ------------------------------------------------------

    def of_sandbox(self, sandbox_id: str) -> list[ContainerRecord]:
        return [r for r in self.store if r.sandbox_id == sandbox_id]

    async def stop_sandbox_containers(self, sandbox_id: str) -> None:
        """Kills every container of the pod at once and waits for their exits."""
        await gather_all([self.runtime.stop(r, POD_STOP_TIMEOUT) for r in self.of_sandbox(sandbox_id)
                    if r.state in (CONTAINER_CREATED, CONTAINER_RUNNING)])

    async def remove_sandbox_containers(self, sandbox_id: str) -> None:
        await gather_all([self._remove(r) for r in self.of_sandbox(sandbox_id)])

    # -- GetContainerEvents ---------------------------------------------------------------

    def subscribe(self) -> AsyncIterator[Event]:
        return self.events.subscribe()

    def _publish_sandbox(self, event_type: int, sb: Sandbox) -> None:
        """A sandbox's own event: a copy of its record (the manager changes it in place later) and
        its containers' records as they are now, as containerd reports them."""
        containers = tuple(self.runtime.refresh(r) for r in self.of_sandbox(sb.id) if r.created_at)
        self.events.publish(event_type, SandboxChange(dataclasses.replace(sb), containers))


def _image_name(config: api.ContainerConfig, image_id: str, repo_tags: list[str]) -> str:
    """The image as ContainerStatus names it: what the user asked for when that is a name, else a tag."""
    asked = config.image.user_specified_image or config.image.image
    if not image_id.removeprefix("sha256:").startswith(asked.removeprefix("sha256:")):
        return asked
    return repo_tags[0] if repo_tags else asked
