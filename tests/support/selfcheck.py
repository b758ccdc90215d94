"""A handler self-check run cut off by a timeout the test picks (handlers.run_probe), for checks
that it leaves nothing, on this host (cgroupfs) and on the guest node (systemd)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cri_shim.config import load
from cri_shim.errors import Internal
from cri_shim.runtime import handlers
from cri_shim.runtime.runc import Runc


def cut_off(tmp_path: Path, timeout: float, driver: str, parent: str) -> tuple[Runc, Path, str]:
    """Runs the self-check's container with runc within timeout: the runtime, the bundle it ran
    in and "ran", or the error ("... timed out ..." when it was cut off)."""
    cfg = load(None)
    cfg.paths.run_dir, cfg.paths.state_dir = str(tmp_path / "run"), str(tmp_path / "state")
    cfg.runtime.cgroup_driver = driver
    cfg.runtime.default_cgroup_parent = parent
    runtime = Runc(cfg.runtime.handlers["runc"].path, tmp_path / "run" / "runc", systemd_cgroup=driver == "systemd")
    bundle = tmp_path / "run" / "self-check" / "runc"
    try:
        asyncio.run(handlers.run_probe(runtime, cfg, bundle, timeout=timeout))
        return runtime, bundle, "ran"
    except Internal as exc:
        return runtime, bundle, str(exc)
