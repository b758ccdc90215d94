"""Runs a real `cri-shim serve` process for a test, on its own state, run dir and socket.

This module imports no generated API code: the conformance tier drives the daemon with the
independent cri_api client, whose descriptors cannot share a process with ours.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

# How much slower than this host the tests' machine is: the guest tier's emulated node sets it
# (tests/guest/run-in-guest), and the tests' waits for something to happen grow by it.
TIME_SCALE = float(os.environ.get("CRI_SHIM_TEST_TIME_SCALE", "1"))
READY_TIMEOUT = 30.0 * TIME_SCALE
# Names the runtime handler every test daemon runs pods with when they name none (its
# runtime.default_handler; a test's own overrides still win); unset: the daemon's own choice.
# scripts/test runs the integration and conformance tiers once more with it set to runc.
HANDLER_ENV = "CRI_SHIM_TEST_HANDLER"


def handler_under_test() -> str:
    """The handler named by HANDLER_ENV, or "" for the daemon's own choice."""
    return os.environ.get(HANDLER_ENV, "")


def toml(data: dict[str, Any]) -> str:
    """Renders nested dicts of str/int/bool/lists as TOML (tables for nested dicts)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(type(v))

    def table(prefix: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and (plain or not nested):
            lines.append(f"[{prefix}]")
        for k, v in plain.items():
            lines.append(f"{json.dumps(k)} = {scalar(v)}")
        for k, v in nested.items():
            table(f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k), v)

    table("", data)
    return "\n".join(lines) + "\n"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """base with extra merged in, table by table."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def version_ok(endpoint: str) -> bool:
    """CRI Version answered OK at endpoint: a raw call, so no generated module is needed (any
    runtime.v1 server: cri-shim, or containerd for the benchmark)."""
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(
            "/runtime.v1.RuntimeService/Version",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            call(b"", timeout=2)
        except grpc.RpcError:
            return False
    return True


class Daemon:
    """One cri-shim process and the directories it owns; restartable, killable."""

    def __init__(
        self, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None, nofile: tuple[int, int] | None = None
    ) -> None:
        """nofile: the (soft, hard) RLIMIT_NOFILE the process starts with; the test's own by default."""
        # A short path: conmon's attach sockets must fit in sun_path (108 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp"))
        # Searchable by all, as the daemon makes its own state and run directories: a pod's root
        # in a user namespace is an unprivileged host user on the way to its container's root.
        self.dir.chmod(0o711)
        self.socket = self.dir / "cri.sock"
        self.log_path = self.dir / "daemon.log"
        base = {
            "server": {"socket": str(self.socket), "log_level": "debug"},
            "paths": {"state_dir": str(self.dir / "state"), "run_dir": str(self.dir / "run")},
            "network": {"conf_dir": str(self.dir / "net.d")},
            # Own cgroup parent: test runs in other namespaces share the host's cgroup tree.
            "runtime": {"default_cgroup_parent": f"/{self.dir.name}", "default_handler": handler_under_test()},
        }
        self.config = merge(base, overrides or {})
        self.config_path = self.dir / "cri-shim.toml"
        self.config_path.write_text(toml(self.config))
        self.env = env or {}
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def start(self, wait: bool = True) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cri_shim", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env},
            preexec_fn=self._limit if self.nofile else None,
        )
        log.close()
        if wait:
            self.wait_ready()

    def _limit(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Waits until Version answers OK (recovery finished), or fails with the daemon's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"cri-shim exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and version_ok(self.endpoint):
                return
            time.sleep(0.05)
        raise TimeoutError(f"cri-shim not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM and wait: the clean shutdown that leaves pods running."""
        return self._signal(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL and wait: a crash."""
        return self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal(self, sig: int) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
