"""The composition root: builds the runtime's parts from the configuration and runs them.

Start-up order matters: the socket answers UNAVAILABLE while recovery reconciles the records
on disk with what really runs, then the gate opens and systemd is told READY=1 (Type=notify).
SIGTERM stops the server and leaves pods and containers running; their monitors outlive the
daemon. SIGHUP reloads the configuration file's live keys (cri_shim.reload).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import time
from pathlib import Path

from cri_shim import eventloop, metrics, server
from cri_shim.cgroups import hierarchy
from cri_shim.cgroups.migration import MigrationWarmer
from cri_shim.config import Config
from cri_shim.image.pull import Puller
from cri_shim.image.rootfs import Rootfs
from cri_shim.image.store import ImageStore
from cri_shim.linux import sdnotify
from cri_shim.linux.rlimits import raise_open_files
from cri_shim.network.pod import PodNetwork
from cri_shim.runtime import handlers
from cri_shim.runtime.containers import ContainerRuntime
from cri_shim.runtime.manager import ContainerManager
from cri_shim.reload import Reloader
from cri_shim.runtime.streams import ContainerStreams, PodPortForward
from cri_shim.sandbox import SandboxManager
from cri_shim.services.container import ContainerService
from cri_shim.services.image import ImageService
from cri_shim.services.runtime_info import RuntimeInfoService
from cri_shim.services.sandbox_metrics import SandboxMetricsService
from cri_shim.services.sandbox import SandboxService
from cri_shim.services.stats import StatsService
from cri_shim.services.streaming import StreamingService
from cri_shim.streaming import Backends, StreamingServer

log = logging.getLogger("cri_shim.daemon")


class AlreadyRunning(RuntimeError):
    """Another cri-shim holds the lock on the state directory."""


class CannotListen(RuntimeError):
    """An address the daemon was configured to serve on cannot be bound."""


class Daemon:
    """Owns every long-lived part of the runtime and the order they start and stop in."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.gate = server.Gate()
        self.network = PodNetwork(cfg)
        # Runs of runc (containers, infra containers) wait on the kernel's cgroup migration lock.
        self.migrations = MigrationWarmer(hierarchy.own_procs_file() if cfg.runtime.warm_cgroup_migrations else None)
        self.sandboxes = SandboxManager(cfg, self.network, self.migrations)
        # Images: the store (records, layers, blobs), the puller, and the rootfs API containers use.
        self.images = ImageStore(cfg.state_dir / "images", cfg.images.pinned_images)
        self.puller = Puller(self.images, cfg.images, os.environ)
        self.rootfs = Rootfs(self.images)
        self.containers = ContainerManager(
            cfg, self.sandboxes, self.images, self.rootfs, ContainerRuntime.from_config(cfg), self.migrations
        )
        # Each handler's start-up self-check (Status), made before recovery settles the default.
        self.handler_checks: dict[str, handlers.HandlerCheck] = {}
        streams = ContainerStreams(self.containers.running, self.containers.runtime)
        self.streaming = StreamingServer(cfg.streaming, Backends(
            exec=streams, attach=streams, portforward=PodPortForward(lambda sid: self.sandboxes.get(sid).namespace_path("net")),
        ))

    def services(self) -> dict[str, list[object]]:
        """The service objects serving each API service, by service name."""
        return {
            "RuntimeService": [
                RuntimeInfoService(self),
                SandboxService(self.sandboxes),
                ContainerService(self.containers, self.sandboxes),
                StatsService(self.containers, self.sandboxes),
                SandboxMetricsService(self.containers, self.sandboxes),
                StreamingService(self.streaming, self.containers, self.sandboxes),
            ],
            "ImageService": [ImageService(self)],
        }

    async def recover(self) -> None:
        """Reconciles durable records with the system before the first call is answered."""
        self.handler_checks, _ = await asyncio.gather(
            handlers.resolve_default(self.cfg, self.containers.runtime.runtimes), self.network.open())
        await asyncio.to_thread(self.images.open)
        await asyncio.to_thread(self.rootfs.recover)
        await self.sandboxes.recover()
        await self.containers.open()
        await self.streaming.start()

    async def close(self) -> None:
        """Releases daemon-side resources; pods, containers and their monitors keep running."""
        await self.streaming.close()
        await self.containers.close()
        await self.sandboxes.close()
        self.migrations.close()
        await asyncio.to_thread(self.images.close)


def _lock_state_dir(cfg: Config) -> int:
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
    fd = os.open(cfg.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"another cri-shim is using {cfg.state_dir}") from None
    return fd


async def run(cfg: Config, path: str | Path | None = None) -> None:
    """Serves until SIGTERM or SIGINT; path is the configuration file SIGHUP reads again."""
    eventloop.prepare(asyncio.get_running_loop())
    notifier = sdnotify.Notifier.from_environment()
    before, after = raise_open_files()
    if after != before:
        log.info("open-file limit raised", extra={"from": before, "to": after})
    lock = _lock_state_dir(cfg)
    cfg.run_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
    daemon = Daemon(cfg)
    grpc_server = server.create(cfg, daemon.services(), daemon.gate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloader = Reloader(cfg, path, daemon.images)
    loop.add_signal_handler(signal.SIGHUP, _reload, reloader, daemon.gate, stop, notifier)
    endpoint = None
    await grpc_server.start()
    server.secure_socket(cfg)
    log.info("listening", extra={"socket": cfg.server.socket, "pid": os.getpid()})
    try:
        if cfg.metrics.address:
            states = metrics.ContainerStates(loop, lambda: [r.state for r in daemon.containers.list()])
            try:
                endpoint = metrics.Endpoint(cfg.metrics.address, states)
            except OSError as exc:
                raise CannotListen(f"metrics.address {cfg.metrics.address}: {exc.strerror or exc}") from None
        started = time.monotonic()
        await daemon.recover()
        metrics.set_recovery(time.monotonic() - started)
        daemon.gate.ready.set()
        log.info("ready", extra={"recovery_seconds": round(time.monotonic() - started, 3)})
        notifier.ready()
        await stop.wait()
        log.info("stopping")
        notifier.stopping()
    finally:
        await grpc_server.stop(grace=5)
        if endpoint is not None:
            endpoint.close()
        await daemon.close()
        Path(cfg.server.socket).unlink(missing_ok=True)
        os.close(lock)


def _reload(reloader: Reloader, gate: server.Gate, stop: asyncio.Event, notifier: sdnotify.Notifier) -> None:
    """SIGHUP: live keys of the file applied, framed for systemd by RELOADING=1 and READY=1 while
    the daemon serves (not during recovery, which must not announce readiness early, nor after
    STOPPING=1)."""
    announce = gate.ready.is_set() and not stop.is_set()
    if announce:
        notifier.reloading()
    reloader.reload()
    if announce:
        notifier.ready()
