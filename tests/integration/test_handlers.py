"""The runtime handlers: crun and runc offered side by side, the default chosen by a self-check
at start-up (crun where it works, else runc), both selectable by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cri_shim.runtime import handlers
from tests.support.client import Cri, api
from tests.support.daemon import Daemon, handler_under_test
from tests.support.faultbin import FaultyBinary
from tests.support.leftovers import cgroup_dirs, processes_of, release_leftovers
from tests.support.pods import pod_config, remove_pod, run_pod, snapshot
from tests.support.selfcheck import cut_off

pytestmark = pytest.mark.integration

UNIFIED = Path("/sys/fs/cgroup/unified")


def handler_info(cri: Cri) -> dict[str, Any]:
    info = cri.runtime.Status(api.StatusRequest(verbose=True)).info
    return json.loads(info["runtimeHandlers"])


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    """Daemons a test starts, stopped and cleaned up after it."""
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        d.stop()
        release_leftovers(d)


def start(started: list[Daemon], runtime: dict[str, Any]) -> tuple[Daemon, Cri]:
    d = Daemon({"runtime": runtime})
    started.append(d)
    d.start()
    return d, Cri(d.endpoint)


def test_both_handlers_pass_their_check_and_the_default_is_shown(cri: Cri, daemon: Daemon) -> None:
    info = handler_info(cri)
    assert set(info["checks"]) == {"runc", "crun"}
    for name, check in info["checks"].items():
        assert check["problem"] == "" and check["version"], (name, check)
        assert os.path.basename(check["binary"]) == name
    # crun where it works (scripts/in-private-ns lets crun 1.8.1 run on this host), unless the
    # tests name the handler.
    assert info["default"] == (handler_under_test() or "crun")
    assert "default runtime handler" in daemon.log_path.read_text()
    names = [h.name for h in cri.runtime.Status(api.StatusRequest()).runtime_handlers]
    assert names == ["", "runc", "crun"]
    # The check leaves nothing: no bundle, no runtime state, no cgroup.
    run_dir = Path(daemon.config["paths"]["run_dir"])
    assert not (run_dir / "self-check").exists()
    assert not any(p.name.startswith("cri-shim-self-check") for h in ("runc", "crun") if (run_dir / h).is_dir()
                   for p in (run_dir / h).iterdir())
    assert not [d for d in cgroup_dirs(daemon.config["runtime"]["default_cgroup_parent"]) if "self-check" in d]


@pytest.mark.parametrize("handler", ["runc", "crun"])
def test_a_pod_runs_with_the_handler_it_names(cri: Cri, daemon: Daemon, handler: str) -> None:
    """Twice: the first run leaves what outlives pods by design (the bridge, the infra root)."""
    config = pod_config(f"by-{handler}", linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(namespace_options=api.NamespaceOption(pid=api.POD))))
    before: dict[str, Any] = {}
    for attempt in range(2):
        config.metadata.attempt = attempt
        sid = run_pod(cri, config, handler=handler)
        answer = cri.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True))
        assert answer.status.runtime_handler == handler
        assert os.path.basename(json.loads(answer.info["info"])["runtimeType"]) == handler
        remove_pod(cri, sid)
        before = before or snapshot(daemon)
    assert snapshot(daemon) == before


def test_a_handler_failing_its_check_is_not_the_default(started: list[Daemon], tmp_path: Path) -> None:
    crun = FaultyBinary(tmp_path, "crun")
    crun.inject("run", "fail")
    _, cri = start(started, {"default_handler": "", "handlers": {"crun": {"path": str(crun.path)}}})
    info = handler_info(cri)
    assert info["default"] == "runc"
    assert "injected crun failure at run" in info["checks"]["crun"]["problem"]
    ready = {c.type: c.status for c in cri.runtime.Status(api.StatusRequest()).status.conditions}
    assert ready["RuntimeReady"]
    cri.close()


def test_a_configured_default_is_kept_even_when_its_check_fails(started: list[Daemon], tmp_path: Path) -> None:
    crun = FaultyBinary(tmp_path, "crun")
    crun.inject("run", "fail")
    _, cri = start(started, {"default_handler": "crun", "handlers": {"crun": {"path": str(crun.path)}}})
    info = handler_info(cri)
    assert info["default"] == "crun" and info["checks"]["crun"]["problem"]
    cri.close()


def test_a_missing_crun_leaves_runc_the_default_and_the_runtime_ready(started: list[Daemon]) -> None:
    _, cri = start(started, {"default_handler": "", "handlers": {"crun": {"path": "/nonexistent/crun"}}})
    info = handler_info(cri)
    assert info["default"] == "runc" and "--version failed" in info["checks"]["crun"]["problem"]
    ready = {c.type: c.status for c in cri.runtime.Status(api.StatusRequest()).status.conditions}
    assert ready["RuntimeReady"]
    cri.close()


CHECK = """
import asyncio, json, sys
from pathlib import Path
from cri_shim.config import load
from cri_shim.runtime import handlers
from cri_shim.runtime.containers import ContainerRuntime
cfg = load(None)
cfg.paths.run_dir, cfg.paths.state_dir = sys.argv[1] + "/run", sys.argv[1] + "/state"
cfg.runtime.default_cgroup_parent = "/" + Path(sys.argv[1]).name
for name, h in cfg.runtime.handlers.items():
    h.root = cfg.paths.run_dir + "/" + name
checks = asyncio.run(handlers.resolve_default(cfg, ContainerRuntime.from_config(cfg).runtimes))
print(json.dumps({"default": cfg.runtime.default_handler, **{n: c.problem for n, c in checks.items()}}))
"""


@pytest.mark.skipif(not (UNIFIED / "cgroup.controllers").exists(), reason="needs a cgroup v1 host with a v2 hierarchy")
def test_crun_refusing_a_hybrid_host_with_v2_controllers_leaves_runc_the_default(tmp_path: Path) -> None:
    """The host as it is outside the tests' namespace: crun 1.8.1 refuses cgroup v1 when the v2
    hierarchy lists any controller."""
    listed = tmp_path / "controllers"
    listed.write_text("hugetlb\n")
    work = Path(tempfile.mkdtemp(prefix="hc", dir="/tmp"))
    script = f'mount --bind {listed} {UNIFIED}/cgroup.controllers && exec "$@"'
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           sys.executable, "-c", CHECK, str(work)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["default"] == "runc" and found["runc"] == ""
    assert "cgroups in hybrid mode not supported" in found["crun"]
    assert not cgroup_dirs(f"/{work.name}")


@pytest.mark.parametrize("timeout", [0.01, 0.03, 0.06, 0.1, 0.2])
def test_a_self_check_cut_off_by_its_timeout_leaves_nothing(tmp_path: Path, timeout: float) -> None:
    """Under emulation runc can overrun the check's timeout: the cut-off run is killed and what
    it made so far (runtime state, a `runc init`, cgroups, the bundle) goes. Cut at several
    points; the first always cuts runc off before its container ran."""
    parent = f"/cri-shim-cut-{tmp_path.name}"
    runtime, bundle, outcome = cut_off(tmp_path, timeout, "cgroupfs", parent)
    try:
        if timeout == 0.01:
            assert "timed out" in outcome, outcome
        assert not (runtime.root / handlers.PROBE).exists() and not bundle.exists(), outcome
        assert not [d for d in cgroup_dirs(parent) if "self-check" in d], outcome
        assert processes_of(parent, tmp_path) == [], outcome
    finally:
        for d in sorted(cgroup_dirs(parent), key=lambda p: p.count("/"), reverse=True):
            os.rmdir(d)
