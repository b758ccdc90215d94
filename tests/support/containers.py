"""A ContainerRuntime on private directories, a private runc root and a private cgroup parent.

Integration tests drive the container layer directly (the RPCs are wired later): containers
run with real runc under real conmon on a busybox rootfs the harness builds. Every path is
derived from one temporary directory, so parallel runs never share runc state or cgroups.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.config import Config, HandlerConfig
from cri_shim.oci.context import SandboxInfo
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.runtime import handlers, plan
from cri_shim.runtime.containers import ContainerRuntime
from cri_shim.runtime.record import ContainerRecord
from tests.support.busybox import make_rootfs
from tests.support.daemon import handler_under_test
from tests.support.leftovers import cgroup_dirs, processes_of
from tests.support.pods import files_under, mounts

T = TypeVar("T")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class Harness:
    """One event loop, one ContainerRuntime, and helpers to make containers on it."""

    def __init__(self, directory: Path | None = None, runc: str = "", conmon: str = "conmon",
                 before_open: Callable[[ContainerRuntime], None] | None = None) -> None:
        """A fresh harness, or (given the directory of an earlier one) its successor after a restart;
        runc and conmon may name wrapper binaries (tests/support/faultbin.py). The one handler is
        called "runc" whatever runs it: by default the binary of the tests' handler
        (tests/support/daemon.py), else the one the daemon prefers. before_open is handed the
        runtime before it opens, to stage what its recovery meets."""
        runc = runc or handler_under_test() or handlers.PREFERRED[0]
        self.dir = directory or Path(tempfile.mkdtemp(prefix="ct", dir="/tmp"))
        self.loop = asyncio.new_event_loop()
        self.rootfs = self.dir / "rootfs" if directory else make_rootfs(self.dir / "rootfs")
        self.cgroup_parent = f"/{self.dir.name}"
        self.logs = self.dir / "logs"
        cfg = Config()
        cfg.paths.state_dir, cfg.paths.run_dir = str(self.dir / "state"), str(self.dir)
        cfg.runtime.handlers = {"runc": HandlerConfig(path=runc, root=str(self.dir / "runc"))}
        cfg.runtime.conmon = conmon
        self.runtime = ContainerRuntime.from_config(cfg)
        self.host = self.runtime.host
        self.runc = self.runtime.runtimes["runc"]
        self.monitor = self.runtime.monitor
        if before_open is not None:
            before_open(self.runtime)
        self.run(self.runtime.open())
        self.count = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def sandbox(self, **kw: Any) -> SandboxInfo:
        kw.setdefault("id", "sb" + self.dir.name)
        kw.setdefault("hostname", "podhost")
        kw.setdefault("cgroup_parent", self.cgroup_parent)
        return SandboxInfo(**kw)

    def config(self, *command: str, name: str = "", **kw: Any) -> api.ContainerConfig:
        """A container config running command, with a fresh PID namespace and a log file."""
        self.count += 1
        kw.setdefault("image", api.ImageSpec(image="busybox:test"))
        cfg = api.ContainerConfig(metadata=api.ContainerMetadata(name=name or f"c{self.count}"), command=list(command), **kw)
        cfg.linux.security_context.namespace_options.pid = api.CONTAINER
        if not cfg.log_path:
            cfg.log_path = f"{cfg.metadata.name}.log"
        return cfg

    def create(self, config: api.ContainerConfig, sandbox: SandboxInfo | None = None,
               sandbox_config: api.PodSandboxConfig | None = None, image: ImageConfig | None = None,
               rootfs: Path | None = None, target_pid_ns: str | None = None) -> ContainerRecord:
        """Checks the config and log path as CreateContainer's plan does (cri_shim.runtime.plan), then
        creates the container."""
        sc = sandbox_config or api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="pod", namespace="ns", uid="u"))
        if not sc.log_directory:
            sc.log_directory = str(self.logs)
        plan.check_config(config)
        log_path = plan.log_file(config, sc.log_directory)
        cid = os.urandom(32).hex()
        return self.run(self.runtime.create(
            container_id=cid, name=f"{config.metadata.name}-{cid[:8]}", sandbox=sandbox or self.sandbox(),
            sandbox_config=sc, config=config, image=image or ImageConfig(), rootfs=rootfs or self.rootfs,
            image_name="busybox:test", image_ref="sha256:" + "0" * 64, image_id="sha256:" + "0" * 64,
            log_path=log_path, target_pid_ns=target_pid_ns,
        ))

    def start(self, record: ContainerRecord) -> ContainerRecord:
        return self.run(self.runtime.start(record))

    def get(self, container_id: str) -> ContainerRecord:
        """The refreshed record of a container, looked up as the container manager looks it up
        (NotFound for unknown ids; unique prefixes allowed)."""
        return self.runtime.refresh(self.runtime.store.resolve(container_id))

    def running(self, container_id: str) -> ContainerRecord:
        """The record of a running container, as the container manager looks it up (NotFound,
        FailedPrecondition)."""
        return self.get(container_id).running()

    def wait_exit(self, record: ContainerRecord, timeout: float = 30) -> ContainerRecord:
        found = self.run(self.monitor.exits.wait(record.id, timeout))
        assert found is not None, f"container {record.id} did not exit within {timeout}s"
        self.run(self.runtime.exit_recorded(record))  # on disk, as the exit watcher's task writes it
        return self.get(record.id)

    def run_to_exit(self, config: api.ContainerConfig, **kw: Any) -> ContainerRecord:
        """Creates, starts and waits for a container; returns its final record."""
        return self.wait_exit(self.start(self.create(config, **kw)))

    def leftovers(self) -> dict[str, Any]:
        """Everything a container can leave behind: runc state, bundles, exit files, records,
        cgroups, processes (monitors and container processes) and mounts."""
        return {
            "runc state": files_under(self.dir / "runc"),
            "bundles": files_under(self.dir / "bundles"),
            "exits": files_under(self.dir / "exits"),
            "records": files_under(self.dir / "state"),
            "cgroups": cgroup_dirs(self.cgroup_parent),
            "processes": processes_of(self.cgroup_parent, self.dir),
            "mounts": mounts(),
        }

    def log_path(self, record: ContainerRecord) -> Path:
        return Path(record.log_path)

    def close(self) -> None:
        """Removes every container, cgroup and file of the harness, even after a failed test."""
        try:
            for record in list(self.runtime.store):
                self.run(self.runtime.remove(record))
        finally:
            self.runtime.close()
            self.loop.close()
            for controller in CGROUP_ROOT.iterdir():
                cg = controller / self.dir.name
                if cg.is_dir():
                    for child in sorted(cg.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                        if child.is_dir():
                            child.rmdir()
                    cg.rmdir()
            shutil.rmtree(self.dir, ignore_errors=True)


def output(h: Harness, config: api.ContainerConfig, **kw: Any) -> tuple[str, str, int]:
    """Runs a container to its end: (stdout, stderr, exit code), lines joined with newlines."""
    from tests.support import crilog

    rec = h.run_to_exit(config, **kw)
    entries = crilog.parse(h.log_path(rec))
    out = "\n".join(crilog.messages(entries, "stdout"))
    err = "\n".join(crilog.messages(entries, "stderr"))
    h.run(h.runtime.remove(rec))
    return out, err, rec.exit_code


@pytest.fixture(scope="module", name="h")
def module_harness() -> Iterator[Harness]:
    """One harness for a test module (import this fixture into the module to use it)."""
    harness = Harness()
    yield harness
    harness.close()
