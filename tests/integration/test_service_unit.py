"""The service unit on this host: READY=1, STOPPING=1 and reload messages from a real daemon to a
stand-in NOTIFY_SOCKET the test binds, and `systemd-analyze verify` of what install-unit writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon, version_ok
from tests.support.pods import pod_config, remove_pod, run_pod

pytestmark = pytest.mark.integration


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """An abstract-namespace datagram socket, as systemd passes it ('@name')."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"cri-shim-notify-{os.getpid()}"
    sock.bind(b"\0" + name.encode())
    sock.settimeout(30)
    yield sock, "@" + name
    sock.close()


def log_lines(d: Daemon) -> list[dict[str, object]]:
    return [json.loads(line) for line in d.log_path.read_text().splitlines() if line.startswith("{")]


def test_ready_comes_after_recovery_and_stopping_at_shutdown(
        notify_socket: tuple[socket.socket, str], own_daemons: list[Daemon]) -> None:
    sock, name = notify_socket
    d = Daemon(env={"NOTIFY_SOCKET": name})
    own_daemons.append(d)
    for start in ("first", "after a pod to recover"):
        d.start(wait=False)
        message = sock.recv(4096).decode().split("\n")
        assert message[0] == "READY=1", (start, message)
        assert d.proc is not None and message[1] == f"MAINPID={d.proc.pid}"
        # At that moment recovery is over: its log line is written and calls are answered.
        assert [line for line in log_lines(d) if line["msg"] == "ready" and line.get("recovery_seconds") is not None]
        assert version_ok(d.endpoint)
        if start == "first":
            cri = Cri(d.endpoint)
            sid = run_pod(cri, pod_config("recovered"))
            cri.close()
        d.stop()
        assert sock.recv(4096) == b"STOPPING=1"
        assert [line["msg"] for line in log_lines(d)].count("ready") == (1 if start == "first" else 2)
    d.start()
    cri = Cri(d.endpoint)
    assert cri.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid)).status.state == api.SANDBOX_READY
    remove_pod(cri, sid)
    cri.close()


def test_sighup_is_framed_by_reloading_and_ready(notify_socket: tuple[socket.socket, str], own_daemons: list[Daemon]) -> None:
    sock, name = notify_socket
    d = Daemon(env={"NOTIFY_SOCKET": name})
    own_daemons.append(d)
    d.start(wait=False)
    assert sock.recv(4096).startswith(b"READY=1\n")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    fields = sock.recv(4096).decode().split("\n")
    assert fields[0] == "RELOADING=1" and fields[1].startswith("MONOTONIC_USEC=")
    assert sock.recv(4096).startswith(b"READY=1\n")
    assert version_ok(d.endpoint)


def test_install_unit_writes_a_unit_systemd_accepts(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cri_shim", "install-unit", "--unit-dir", str(tmp_path / "system"),
                          "--config", str(tmp_path / "etc" / "cri-shim.toml")], capture_output=True, text=True, check=True)
    assert f"wrote {tmp_path}/system/cri-shim.service" in out.stdout and "systemctl enable --now cri-shim" in out.stdout
    unit = tmp_path / "system" / "cri-shim.service"
    assert f"ExecStart={sys.executable} -m cri_shim serve --config {tmp_path}/etc/cri-shim.toml" in unit.read_text()
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    # verify exits 0 on directives it ignores, saying so on stderr: nothing may be said of our unit.
    assert verified.returncode == 0, verified.stderr
    assert "cri-shim.service" not in verified.stderr, verified.stderr
    # The check can fail: a directive systemd does not know is reported.
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notified"))
    assert "cri-shim.service" in subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True).stderr
