"""The SandboxContainers hook: Stop and Remove reach the container manager first, in order."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.config import Config
from cri_shim.linux import proc
from cri_shim.network.pod import PodNetwork
from cri_shim.sandbox import SandboxManager
from tests.support.leftovers import cgroup_dirs

pytestmark = pytest.mark.integration


class Recorder:
    """A container manager stand-in that notes each call and whether the infra process still ran."""

    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager
        self.calls: list[tuple[str, str, bool]] = []

    def _infra_alive(self, sandbox_id: str) -> bool:
        sb = self.manager.store.get(sandbox_id)
        return bool(sb and sb.infra and proc.is_alive(sb.infra.pid, sb.infra.start_time))

    async def stop_sandbox_containers(self, sandbox_id: str) -> None:
        self.calls.append(("stop", sandbox_id, self._infra_alive(sandbox_id)))

    async def remove_sandbox_containers(self, sandbox_id: str) -> None:
        self.calls.append(("remove", sandbox_id, self._infra_alive(sandbox_id)))


def test_stop_and_remove_call_the_container_manager_before_releasing() -> None:
    base = Path(tempfile.mkdtemp(prefix="csh", dir="/tmp"))
    cfg = Config()
    cfg.paths.state_dir = str(base / "state")
    cfg.paths.run_dir = str(base / "run")
    cfg.runtime.default_cgroup_parent = f"/{base.name}"
    cfg.runtime.default_handler = "runc"  # settled by the daemon at start-up, which this test has none of
    host_net = api.NamespaceOption(network=api.NODE)
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="hook", namespace="ns", uid="u"),
        linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(namespace_options=host_net)),
    )

    async def scenario() -> list[tuple[str, str, bool]]:
        manager = SandboxManager(cfg, PodNetwork(cfg))
        await manager.recover()
        recorder = Recorder(manager)
        manager.register_containers(recorder)
        sid = await manager.run(config, "")
        sb = manager.get(sid)
        assert sb.pid_namespace_path() == f"/proc/{sb.infra.pid}/ns/pid"
        assert sb.cgroups_path("ctr1") == f"/{base.name}/ctr1"
        await manager.stop(sid)
        await manager.remove(sid)
        await manager.close()
        return recorder.calls

    try:
        calls = asyncio.run(scenario())
        sid = calls[0][1]
        assert calls == [("stop", sid, True), ("stop", sid, False), ("remove", sid, False)]
        assert cgroup_dirs(cfg.runtime.default_cgroup_parent) == []
        assert os.listdir(base / "state" / "records" / "sandboxes") == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
