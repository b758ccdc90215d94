"""The runc/conmon layer: create, start, stop, remove, exec, status refresh, recovery.

ContainerRuntime drives runc through the Monitor and persists each ContainerRecord in the
RecordStore it is given before what it does. It is handed records: looking them up by id or
prefix, and telling GetContainerEvents subscribers, is the container manager's (the one owner
of a container, cri_shim.runtime.manager); the runtime tells its one subscriber when it has
recorded a start or an exit. It knows nothing of how sandboxes or images are made: callers hand
it a SandboxInfo, a rootfs path and an ImageConfig. Rules it keeps:
- the record is persisted before the runtime or the monitor runs anything (created_at 0
  while `runc create` runs, so a crash midway is found and cleaned up at start-up by
  cri_shim.runtime.recovery, as are a bundle and idmapped sources no record owns);
- exits come from the monitor's exit files (inotify callback, or read on demand), so exits
  that happened while the daemon was down are recorded after it comes back;
- Stop and Remove of finished or removed containers succeed; a failure while creating
  leaves nothing behind (runc state, bundle, exit file, record).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cri_shim.api import api_pb2
from cri_shim.cdi.edits import Edits
from cri_shim.cgroups import oomwatch, stats
from cri_shim.concurrency import gather_all
from cri_shim.config import Config
from cri_shim.errors import FailedPrecondition, Internal, NotFound
from cri_shim.linux import proc
from cri_shim.oci import apparmor, bundlespec
from cri_shim.oci import resources as oci_resources
from cri_shim.oci.context import HostInfo, SandboxInfo
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.oci.spec import Defaults, build_spec
from cri_shim.runtime import execsync, idmounts, logfile, recovery
from cri_shim.runtime.conmon import ConmonMonitor
from cri_shim.runtime.exits import ExitFile
from cri_shim.runtime.monitor import Monitor, MonitorSpec
from cri_shim.runtime.runc import Runc
from cri_shim.runtime.seccompfilters import SeccompFilters
from cri_shim.store import atomic
from cri_shim.runtime.record import CONTAINER_CREATED, CONTAINER_RUNNING, ContainerRecord
from cri_shim.store.records import RecordStore

log = logging.getLogger("cri_shim.runtime")

CREATE_TIMEOUT = 240.0
KILL_WAIT = 30.0
REOPEN_TIMEOUT = 10.0
DISCARD_WAIT = 5.0
# How long recording an exit waits for the container's last output to reach its log.
LOG_WAIT = 2.0
CONSOLE_LOG = "console.log"
UNKNOWN_EXIT = 255


class ContainerRuntime:
    """Creates and runs the containers it is handed under monitors; the record store is the source of truth."""

    def __init__(self, store: RecordStore[ContainerRecord], monitor: Monitor, runtimes: dict[str, Runc],
                 bundle_root: Path, host: HostInfo, spec_defaults: Defaults, exec_output_limit: int,
                 exec_drain: float | None, spec_limit: int, idmap_root: Path) -> None:
        self.store = store
        self.monitor = monitor
        self.runtimes = runtimes
        self.bundle_root = bundle_root
        # Where the idmapped sources of containers being created are attached (idmounts).
        self.idmap_root = idmap_root
        self.host = host
        self.spec_defaults = spec_defaults
        # ExecSync's stdout and stderr together, so that its reply fits the gRPC message limit.
        self.exec_output_limit = exec_output_limit
        # How long an exec's output is read after it exited (None: until the pipes close).
        self.exec_drain = exec_drain
        # The largest runtimeSpec verbose ContainerStatus reports (bundlespec).
        self.spec_limit = spec_limit
        self._listeners: list[Callable[[int, ContainerRecord], None]] = []
        # Containers whose `runc start` runs: their exits wait until the start is recorded.
        self._starting: set[str] = set()
        # The exit watcher's tasks recording exits (_record_exit), and the containers whose exit
        # one of them is writing now.
        self._exit_tasks: dict[str, asyncio.Task[None]] = {}
        self._recording: set[str] = set()
        self.oom = oomwatch.OomWatcher()
        self.seccomp_filters = SeccompFilters()
        monitor.exits.subscribe(self._on_exit)

    @classmethod
    def from_config(cls, cfg: Config) -> ContainerRuntime:
        """The runtime laid out under the configured directories (nothing is touched yet)."""
        systemd = cfg.runtime.cgroup_driver == "systemd"
        runtimes = {name: Runc(h.path, Path(h.root), systemd_cgroup=systemd) for name, h in cfg.runtime.handlers.items()}
        monitor = ConmonMonitor(cfg.runtime.conmon, cfg.run_dir / "exits", cfg.run_dir / "s",
                                log_size_max=cfg.runtime.log_size_max_bytes,
                                max_log_line=cfg.runtime.max_container_log_line_size)
        store: RecordStore[ContainerRecord] = RecordStore("container", cfg.state_dir / "containers", ContainerRecord)
        defaults = Defaults(seccomp_profile=cfg.runtime.seccomp_default_profile,
                            seccomp_when_unset=cfg.runtime.seccomp_default_when_unset,
                            pids_limit=cfg.runtime.default_pids_limit)
        return cls(store, monitor, runtimes, cfg.run_dir / "bundles", HostInfo.detect(), defaults,
                   execsync.output_limit(cfg.server.max_message_bytes),
                   cfg.runtime.drain_exec_sync_io_timeout_ms / 1000 or None,
                   bundlespec.spec_limit(cfg.server.max_message_bytes), cfg.run_dir / "idmap")

    async def open(self) -> None:
        """Start-up: checks the monitor, loads the records, watches exits, reconciles."""
        await self.monitor.check()
        self.monitor.start()
        for path, exc in self.store.load():
            log.warning("unreadable container record", extra={"path": str(path), "error": str(exc)})
        self.monitor.exits.start()
        self.oom.start()
        await recovery.recover(self)

    def close(self) -> None:
        """Stops watching exits; containers and their monitors keep running."""
        self.monitor.exits.close()
        self.oom.close()
        self.monitor.close()

    def subscribe(self, callback: Callable[[int, ContainerRecord], None]) -> None:
        """callback(event type, record) runs when a start or an exit is recorded (container events:
        CONTAINER_STARTED_EVENT, CONTAINER_STOPPED_EVENT), in that order for each container."""
        self._listeners.append(callback)

    def runc(self, record: ContainerRecord) -> Runc:
        """The OCI runtime of the container's handler (FailedPrecondition once it is no longer configured)."""
        return self._runc(record.runtime_handler)

    def _runc(self, handler: str) -> Runc:
        try:
            return self.runtimes[handler]
        except KeyError:
            raise FailedPrecondition(f"runtime handler {handler!r} is not configured") from None

    async def create(self, *, container_id: str, name: str, sandbox: SandboxInfo,
                     sandbox_config: api_pb2.PodSandboxConfig, config: api_pb2.ContainerConfig, image: ImageConfig,
                     rootfs: Path, image_name: str = "", image_ref: str = "", image_id: str = "",
                     runtime_handler: str = "runc", log_path: str = "", target_pid_ns: str | None = None,
                     cdi_edits: Edits = Edits()) -> ContainerRecord:
        """Builds the spec and runs `runc create` under a monitor; the container is CREATED.

        The request was checked first (cri_shim.runtime.plan): log_path is the verified log file."""
        runc = self._runc(runtime_handler)
        built = build_spec(container_id, config, sandbox_config, sandbox, image, rootfs, self.host,
                           image_name=image_name, target_pid_ns=target_pid_ns, defaults=self.spec_defaults,
                           cdi_edits=cdi_edits)
        if built.spec["process"].get("apparmorProfile") == apparmor.DEFAULT_PROFILE:
            await asyncio.to_thread(apparmor.ensure_default_loaded)
        # Added here, after every client field was applied (and run.oci.* annotations refused).
        reused = self.seccomp_filters.annotate(runc.root, built.spec)
        bundle = self.bundle_root / container_id
        record = ContainerRecord(
            id=container_id, name=name, sandbox_id=sandbox.id, config=config,
            image=image_name or config.image.image, image_ref=image_ref,
            image_id=image_id, runtime_handler=runtime_handler, bundle=str(bundle), log_path=log_path,
            user={"uid": built.user.uid, "gid": built.user.gid, "supplemental_groups": built.user.additional_gids},
            stop_signal=built.stop_signal, cgroups_path=built.spec["linux"]["cgroupsPath"],
            image_volumes=built.image_volumes,
        )
        idmapped: dict[str, str] = {}
        try:
            bundle.mkdir(parents=True, mode=0o700)
            if sandbox.userns_path is not None:
                idmapped = {"/": str(rootfs), **idmounts.attach(
                    built.spec, idmounts.directory(self.idmap_root, container_id), sandbox.userns_path)}
            # The record and the spec are written at once, on worker threads (no other call writes
            # a record whose create has not finished). The bundle lives in the volatile run dir:
            # a power cut takes the container with it, so its spec needs no fsync.
            await _to_the_end(gather_all([self.store.write(record), asyncio.to_thread(
                atomic.write_json, bundle / "config.json", built.spec, durable=False)]))
            log_file = logfile.for_create(log_path) if log_path else logfile.in_directory(bundle, CONSOLE_LOG)
            with log_file as (log_dir, log_name):
                created = await self.monitor.create(MonitorSpec(
                    container_id=container_id, name=name, bundle=bundle, log_dir=log_dir, log_name=log_name,
                    log_path=self.log_file(record),
                    runtime=runc, stdin=config.stdin, stdin_once=config.stdin_once, tty=config.tty,
                    scope_slice=record.cgroups_path.split(":", 1)[0] if runc.systemd_cgroup else None,
                ), CREATE_TIMEOUT)
        except BaseException:
            self.seccomp_filters.forget(runc.root, built.spec)
            try:
                await self.discard(record)
            except Exception:  # noqa: BLE001 - the create's own error is the one to report
                log.exception("rollback incomplete, record kept for RemoveContainer", extra={"container": record.id})
            raise
        finally:
            # The container's mount namespace holds its own binds of them now (or it failed).
            idmounts.release(idmounts.directory(self.idmap_root, container_id))
        if not reused:
            self.seccomp_filters.learn(runc.root, built.spec, container_id)
        record = dataclasses.replace(self.store.get(container_id) or record, created_at=time.time_ns(), pid=created.pid,
                                     pid_start_time=proc.start_time(created.pid) or 0, monitor_pid=created.monitor_pid,
                                     monitor_start_time=created.monitor_start_time, idmapped=idmapped)
        await self.store.write(record)
        self.oom.watch(record.cgroups_path, bundle)
        return self.refresh(record)

    async def discard(self, record: ContainerRecord, alongside: Callable[[], Awaitable[None]] | None = None) -> None:
        """Removes every trace of a container: runc state, bundle, exit file, record.

        When runc cannot delete its state the error is raised and the record kept: dropping it
        would leave runc state and a cgroup nothing refers to, while a kept record lets a
        later RemoveContainer finish the job. alongside runs once nothing of the container runs
        any more (its processes and runtime state gone), beside the removal of its files and
        record: the caller's own release of what the container ran on.
        """
        await self.runc(record).delete(record.id)
        monitor = self._live_monitor(record)
        if monitor is not None:
            # The monitor records the exit of what delete killed; let it, then drop the file.
            if await self.monitor.exits.wait(record.id, DISCARD_WAIT) is None and self.monitor.alive(*monitor):
                # An interrupted create whose monitor still waits on a runtime call that hangs:
                # end both, then delete whatever that call had made.
                log.warning("killing the monitor of an unfinished create", extra={"container": record.id, "pid": monitor[0]})
                await proc.kill_tree(*monitor)
                await self.runc(record).delete(record.id)
        await gather_all([self._forget(record), *([alongside()] if alongside else [])])

    async def _forget(self, record: ContainerRecord) -> None:
        await self.drop_files(record.id, Path(record.bundle))
        await self.store.erase(record.id)

    async def drop_files(self, container_id: str, bundle: Path) -> None:
        """Removes the files a container had outside its record: idmapped sources a crash kept
        attached, the bundle (on a worker thread: with a console log in it, it may be large),
        the exit file, and the attach socket's directory, which conmon makes a symlink to the
        bundle and leaves behind when it exits."""
        idmounts.release(idmounts.directory(self.idmap_root, container_id))
        self.monitor.release(container_id, bundle)
        await asyncio.to_thread(shutil.rmtree, bundle, True)
        self.monitor.attach_socket(container_id).parent.unlink(missing_ok=True)
        self.monitor.exits.forget(container_id)

    @staticmethod
    def log_file(record: ContainerRecord) -> str:
        """Where the container's output goes: its log, or a file in its bundle when it asked for none."""
        return record.log_path or str(Path(record.bundle) / CONSOLE_LOG)

    def _live_monitor(self, record: ContainerRecord) -> tuple[int, int] | None:
        """(pid, start time) of the container's monitor while it runs."""
        if not record.monitor_pid:  # interrupted create: what the monitor wrote is all there is
            return self.monitor.started_monitor(Path(record.bundle))
        monitor = (record.monitor_pid, record.monitor_start_time)
        return monitor if self.monitor.alive(*monitor) else None

    def refresh(self, record: ContainerRecord) -> ContainerRecord:
        """The record with any exit its monitor has recorded since (persisted when changed).

        Whichever call sees an exit first records it (a status poll may beat the exit watcher),
        so the listeners are told here, once per container; a record removed meanwhile is not
        brought back, and the exit of a container being started waits for its start. While the
        exit watcher's task writes an exit (_record_exit), the exit is returned as that task
        will record it, and it alone persists it and tells the listeners.
        """
        if record.finished_at or not record.created_at or record.id in self._starting:
            return record
        stored = self.store.get(record.id)
        if stored is None or stored.finished_at:
            return stored or record
        found = self.monitor.exits.read(record.id)
        if found is None and not self.monitor.alive(record.monitor_pid, record.monitor_start_time):
            found = self.monitor.exits.read(record.id)
            if found is None:
                return self._recorded(api_pb2.CONTAINER_STOPPED_EVENT, dataclasses.replace(
                    stored, finished_at=time.time_ns(), exit_code=UNKNOWN_EXIT, reason="Unknown",
                    message="the container's monitor exited without recording an exit"))
        if found is None:
            return stored
        # The exit file is written once the output is in the monitor's pipe: let it reach the log.
        self._log_written(record.id, self.monitor.log_written(record.id, LOG_WAIT))
        exited = self._exited(stored, found)
        return exited if record.id in self._recording else self._recorded(api_pb2.CONTAINER_STOPPED_EVENT, exited)

    @staticmethod
    def _log_written(container_id: str, written: bool) -> None:
        if not written:
            log.warning("the container's log is still being written at its exit", extra={"container": container_id})

    def _exited(self, stored: ContainerRecord, found: ExitFile) -> ContainerRecord:
        """stored with the exit its monitor recorded, and the reason for it."""
        # An OOM kill of some child while the main process exits 0 is still a completion.
        bundle = Path(stored.bundle)
        if found.code != 0 and (self.monitor.oom_killed(bundle) or oomwatch.killed(bundle)
                                or stats.oom_kills(stored.cgroups_path) > 0):
            reason = "OOMKilled"
        else:
            reason = "Completed" if found.code == 0 else "Error"
        # File times are coarse (jiffies): never report an exit before the recorded start.
        finished_at = max(found.finished_at, stored.started_at, stored.created_at)
        return dataclasses.replace(stored, finished_at=finished_at, exit_code=found.code, reason=reason)

    def _recorded(self, event_type: int, record: ContainerRecord) -> ContainerRecord:
        self.store.save(record)
        return self._tell(event_type, record)

    def _tell(self, event_type: int, record: ContainerRecord) -> ContainerRecord:
        """Tells the listeners of a start or an exit once it is on disk."""
        for callback in self._listeners:
            callback(event_type, record)
        return record

    def _on_exit(self, container_id: str) -> None:
        """The exit watcher's callback: a task records the exit (one at a time a container)."""
        if container_id not in self._exit_tasks:
            task = asyncio.get_running_loop().create_task(self._record_exit(container_id))
            self._exit_tasks[container_id] = task
            task.add_done_callback(lambda _: self._exit_tasks.pop(container_id, None))

    async def _record_exit(self, container_id: str) -> None:
        """Records an exit as refresh() does, with the wait for the log and the record's write
        on worker threads: the loop serves other calls meanwhile (the exit file stays, so a
        crash before the write finds the exit again at start-up). It holds the record's lock, so
        a start, an update or a removal under way goes first; one that recorded the exit
        meanwhile leaves nothing to do."""
        async with self.store.lock(container_id):
            stored = self.store.get(container_id)
            if stored is None or stored.finished_at or not stored.created_at or container_id in self._starting:
                return
            found = self.monitor.exits.read(container_id)
            if found is None:
                return
            self._recording.add(container_id)
            try:
                self._log_written(container_id, await asyncio.to_thread(self.monitor.log_written, container_id, LOG_WAIT))
                exited = self._exited(stored, found)
                await self.store.write(exited)
            except Exception:  # noqa: BLE001 - the exit file stays: the next refresh records it
                log.exception("recording an exit failed", extra={"container": container_id})
                return
            finally:
                self._recording.discard(container_id)
            self._tell(api_pb2.CONTAINER_STOPPED_EVENT, exited)

    async def exit_recorded(self, record: ContainerRecord) -> None:
        """Returns once the container's exit, if its monitor has recorded one, is on disk: for
        callers that do not hold the record's lock (the exit watcher's task may be writing it)."""
        task = self._exit_tasks.get(record.id)
        if task is not None:
            await asyncio.shield(task)
        self.refresh(self.store.get(record.id) or record)

    async def start(self, record: ContainerRecord) -> ContainerRecord:
        """Starts a created container (FailedPrecondition for one in another state)."""
        async with self.store.lock(record.id):
            record = self.refresh(self.store.get(record.id) or record)
            if record.state != CONTAINER_CREATED:
                raise FailedPrecondition(f"container {record.id} is not in the created state")
            # Taken before the process runs, so a quick exit never precedes its start.
            started_at = time.time_ns()
            # Until the start is on disk: an exit seen meanwhile waits (refresh), or its record
            # would precede the start's, which would then overwrite it.
            self._starting.add(record.id)
            try:
                try:
                    await self.runc(record).start(record.id)
                except Exception as exc:
                    current = self.store.get(record.id) or record
                    await self.store.write(dataclasses.replace(
                        current, finished_at=time.time_ns(), exit_code=128, reason="StartError", message=str(exc)))
                    await self.runc(record).delete(record.id)
                    raise
                # On disk before the answer, on a worker thread (we hold the record's lock): a
                # start the record lacks is found again at start-up (recovery), but a kubelet
                # told the container started must find it so after a crash too.
                started = dataclasses.replace(self.store.get(record.id) or record, started_at=started_at)
                await self.store.write(started)
            finally:
                self._starting.discard(record.id)
            return self.refresh(self._tell(api_pb2.CONTAINER_STARTED_EVENT, started))

    async def stop(self, record: ContainerRecord, timeout: float) -> None:
        """Stop signal, up to timeout seconds, then SIGKILL; returns once the exit is recorded
        (a container not running is already stopped)."""
        record = self.refresh(record)
        if record.state != CONTAINER_RUNNING:
            await self.exit_recorded(record)
            return
        if timeout > 0:
            await self._signal(record, record.stop_signal)
            if await self.monitor.exits.wait(record.id, timeout) is not None:
                await self.exit_recorded(record)
                return
        await self._kill(record)
        await self.exit_recorded(record)

    async def _signal(self, record: ContainerRecord, sig: int) -> None:
        """Sends sig to the container's first process, as `runc kill` without --all does, but
        from here: StopContainer runs no runtime process for it. The pidfd of the process
        recorded at create (pid and start time, as runc checks them) never reaches one that
        reused the pid; one that has exited needs no signal. A record made before the start time
        was kept has the runtime send it."""
        if record.pid_start_time:
            proc.send_signal(record.pid, record.pid_start_time, sig)
        else:
            await self.runc(record).kill(record.id, sig)

    async def _kill(self, record: ContainerRecord) -> None:
        await self.runc(record).kill(record.id, signal.SIGKILL, all_processes=True)
        if await self.monitor.exits.wait(record.id, KILL_WAIT) is None:
            raise Internal(f"container {record.id} did not exit {KILL_WAIT}s after SIGKILL")
        self.refresh(self.store.get(record.id) or record)

    async def remove(self, record: ContainerRecord, alongside: Callable[[], Awaitable[None]] | None = None) -> None:
        """Kills what runs, deletes runc's state, the bundle and the record (one removed
        meanwhile is already gone); alongside as for discard(), run in any case."""
        async with self.store.lock(record.id):
            record = self.store.get(record.id)
            if record is None:
                if alongside is not None:
                    await alongside()
                return
            record = self.refresh(record)
            if record.created_at and not record.finished_at:
                await self._kill(record)
            await self.discard(record, alongside)

    def verbose_info(self, record: ContainerRecord) -> dict[str, Any]:
        """What verbose ContainerStatus reports beside the status, with containerd's names where
        it has them: the spec runc runs the container with (runtimeSpec, bounded), its process
        (pid), its sandbox, its handler and, as runtimeType, the OCI runtime binary the handler
        runs (containerd names its shim type there; ours is runc under conmon)."""
        runtime = self.runtimes.get(record.runtime_handler)
        idmapped = [{"destination": d, "source": s,
                     "how": "overlay over idmapped layers (cri-shim)" if d == "/" else "idmapped bind (cri-shim)"}
                    for d, s in sorted(record.idmapped.items())]
        return {
            **({"idmappedMounts": idmapped} if idmapped else {}),
            "sandboxID": record.sandbox_id, "pid": record.pid, "runtimeHandler": record.runtime_handler,
            "runtimeType": runtime.binary if runtime else "", "bundle": record.bundle, "monitorPid": record.monitor_pid,
            "cgroupsPath": record.cgroups_path, "stdin": record.config.stdin, "stdinOnce": record.config.stdin_once, "tty": record.config.tty,
            "imageVolumes": [{"containerPath": k, "hostPath": v} for k, v in sorted(record.image_volumes.items())],
            **bundlespec.verbose_entries(Path(record.bundle), self.spec_limit),
        }

    async def exec_sync(self, record: ContainerRecord, argv: list[str], timeout: float | None) -> execsync.ExecResult:
        """Runs argv in the container (FailedPrecondition unless it runs)."""
        record = record.running()
        return await execsync.exec_sync(self.runc(record), record.id, Path(record.bundle), argv, timeout,
                                        self.exec_output_limit, self.exec_drain)

    async def reopen_log(self, record: ContainerRecord) -> None:
        """Synchronous log reopen: returns once the new file exists (errors if not running, or
        when the log's directory is gone or was replaced, by a symlink or otherwise)."""
        record = record.running()
        if record.log_path:
            with logfile.for_reopen(record.log_path) as (log_dir, log_name):
                await self.monitor.reopen_log(record.id, Path(record.bundle), log_dir, log_name, record.monitor_pid, REOPEN_TIMEOUT)

    async def update_resources(self, record: ContainerRecord, res: api_pb2.LinuxContainerResources) -> ContainerRecord:
        """Applies new cgroup limits with `runc update`, then records them."""
        if record.state not in (CONTAINER_CREATED, CONTAINER_RUNNING):
            raise FailedPrecondition(f"container {record.id} is not running")
        await self.runc(record).update(record.id, oci_resources.build(res, self.host.swap_accounting, self.host.cgroup_v2))
        # Under the record's lock: a start in flight writes its record from a worker thread, and
        # one of the two writes would otherwise lose the other's change.
        async with self.store.lock(record.id):
            current = self.store.get(record.id)
            if current is None:  # removed meanwhile: its record is not brought back
                raise NotFound(f"container {record.id} not found")
            config = api_pb2.ContainerConfig()
            config.CopyFrom(current.config)
            config.linux.resources.CopyFrom(res)
            updated = dataclasses.replace(current, config=config)
            await self.store.write(updated)
        return updated


async def _to_the_end(work: Awaitable[None]) -> None:
    """Awaits work; when cancelled meanwhile, still waits for it to end before the cancellation
    goes on: a write on a worker thread cannot be stopped, and a rollback that ran beside it
    would be undone by it (a bundle made again, a record written after its removal)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller is told
        raise
