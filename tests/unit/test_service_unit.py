"""The systemd side without systemd: sd_notify datagrams to a socket the test binds, the unit's text."""

from __future__ import annotations

import configparser
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri_shim import config, unit
from cri_shim.linux import sdnotify

pytestmark = pytest.mark.unit


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"cri-shim-test-{os.getpid()}-{id(sock)}"
    sock.bind(b"\0" + name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_ready_reaches_an_abstract_socket_no_child_inherits(abstract_socket: socket.socket) -> None:
    notifier = sdnotify.Notifier.from_environment()
    assert "NOTIFY_SOCKET" not in os.environ  # runc would set up a notify socket for containers
    assert notifier.ready()
    assert abstract_socket.recv(4096).decode().split("\n") == ["READY=1", f"MAINPID={os.getpid()}"]
    assert notifier.stopping()
    assert abstract_socket.recv(4096) == b"STOPPING=1"
    assert notifier.reloading()
    fields = abstract_socket.recv(4096).decode().split("\n")
    assert fields[0] == "RELOADING=1" and fields[1].startswith("MONOTONIC_USEC=") and int(fields[1].split("=")[1]) > 0


def test_ready_reaches_a_path_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        assert sdnotify.Notifier(str(tmp_path / "notify")).ready()
        assert sock.recv(4096).startswith(b"READY=1\n")


@pytest.mark.parametrize("name", ["", "relative/path", "vsock:2:1234", "/nonexistent/nobody-listens"])
def test_without_a_usable_socket_nothing_is_sent(name: str) -> None:
    assert not sdnotify.Notifier(name).ready()  # logged, never raised


def test_unit_is_what_containerd_and_crio_ship(tmp_path: Path) -> None:
    written = unit.install(tmp_path / "system", tmp_path / "etc" / "cri-shim.toml", python="/usr/bin/python3")
    assert written == [tmp_path / "etc" / "cri-shim.toml", tmp_path / "system" / "cri-shim.service"]
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read_string(written[1].read_text())
    service = parsed["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == f"/usr/bin/python3 -m cri_shim serve --config {tmp_path}/etc/cri-shim.toml"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (service["KillMode"], service["Delegate"], service["Restart"]) == ("process", "yes", "always")
    assert int(service["LimitNOFILE"]) >= 1048576 and service["TasksMax"] == "infinity"
    assert "RuntimeDirectory" not in service  # would remove /run/cri-shim at each stop
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    # The configuration written is the documented defaults, and it loads.
    assert config.load(written[0]) == config.load(None)


def test_an_existing_config_is_kept(tmp_path: Path) -> None:
    (tmp_path / "cri-shim.toml").write_text("[server]\nlog_level = \"debug\"\n")
    written = unit.install(tmp_path, tmp_path / "cri-shim.toml", python="/usr/bin/python3")
    assert written == [tmp_path / "cri-shim.service"]
    assert config.load(tmp_path / "cri-shim.toml").server.log_level == "debug"


@pytest.mark.parametrize("path", ["/opt/my env/python", "/usr/bin/py%n", "relative/python", "/usr/bin/$PY", "/a\"b"])
def test_paths_systemd_would_read_otherwise_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(unit.UnitError):
        unit.install(tmp_path, tmp_path / "cri-shim.toml", python=path)
    assert not (tmp_path / "cri-shim.service").exists()
