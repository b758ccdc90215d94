"""CDI devices through a real daemon: spec files the tests write into their own CDI directories
(runtime.cdi_spec_dirs) for stand-in character devices made with mknod, asked for by
CDI_devices and by cdi.k8s.io/* annotations, seen by real containers; and the requests that
must be refused, leaving nothing behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.support.client import api
from tests.support.daemon import merge
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled, container_config, create, exec_sync, logged_pod, pulled_daemon, pulling_from, run_container,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture

# A character major no driver of this kernel registers (/proc/devices): opening a node of it
# fails with ENXIO once the device cgroup lets it through, with EPERM while it does not.
NO_DRIVER = 240


@pytest.fixture
def cdi_dirs(tmp_path: Path) -> tuple[Path, Path]:
    static, dynamic = tmp_path / "etc-cdi", tmp_path / "run-cdi"
    static.mkdir()
    dynamic.mkdir()
    return static, dynamic


@pytest.fixture
def daemon_overrides(registry: Registry, cdi_dirs: tuple[Path, Path]) -> dict[str, Any]:
    return merge(pulling_from(registry), {"runtime": {"cdi_spec_dirs": [str(d) for d in cdi_dirs]}})


@pytest.fixture
def nodes(tmp_path: Path) -> Path:
    """Stand-in device nodes: gpu0 and gpu1 as /dev/null (c 1 3), noop of a major with no driver."""
    directory = tmp_path / "dev"
    directory.mkdir()
    for name, major, minor in (("gpu0", 1, 3), ("gpu1", 1, 3), ("noop", NO_DRIVER, 0)):
        os.mknod(directory / name, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(directory / name, 0o666)  # past the umask: the mode the container's node copies
    return directory


def write_spec(directory: Path, name: str, content: dict[str, Any]) -> None:
    text = json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content)
    (directory / name).write_text(text)


def gpu_spec(nodes: Path, shared: Path, hook_out: Path) -> dict[str, Any]:
    return {
        "cdiVersion": "0.7.0",
        "kind": "example.com/gpu",
        "containerEdits": {
            "env": ["GPU_DRIVER=stand-in"],
            "mounts": [{"hostPath": str(shared), "containerPath": "/opt/gpu-libs", "options": ["ro", "bind"]}],
            "hooks": [{"hookName": "createRuntime", "path": "/bin/sh", "args": ["sh", "-c", f"cat > {hook_out}"]}],
            "additionalGids": [4242],
        },
        "devices": [
            {"name": "gpu0", "containerEdits": {"deviceNodes": [{"path": "/dev/gpu0", "hostPath": str(nodes / "gpu0")}],
                                                "env": ["GPU_VISIBLE=0"]}},
            {"name": "gpu1", "containerEdits": {"deviceNodes": [{"path": "/dev/gpu1", "hostPath": str(nodes / "gpu1")}]}},
        ],
    }


def sh(cri: Any, cid: str, script: str) -> api.ExecSyncResponse:
    return exec_sync(cri, cid, "sh", "-c", script)


def test_a_cdi_device_reaches_the_container(pulled: Pulled, cdi_dirs: tuple[Path, Path], nodes: Path,
                                            tmp_path: Path) -> None:
    cri, d = pulled.cri, pulled.daemon
    shared, hook_out = tmp_path / "libs", tmp_path / "hook-state.json"
    shared.mkdir()
    (shared / "libgpu.so").write_text("stand-in library\n")
    write_spec(cdi_dirs[1], "example.com-gpu.yaml", gpu_spec(nodes, shared, hook_out))
    pod = logged_pod(d, "cdi")
    sid = run_pod(cri, pod)
    config = container_config("app", "sleep", "600", image=pulled.name,
                              CDI_devices=[api.CDIDevice(name="example.com/gpu=gpu0")])
    cid = run_container(cri, sid, pod, config)

    listing = sh(cri, cid, "ls -l /dev/gpu0").stdout.decode()
    assert listing.startswith("crw-rw-rw-") and "1,   3" in listing, listing
    wrote = sh(cri, cid, "echo written > /dev/gpu0 && echo ok")
    assert (wrote.exit_code, wrote.stdout) == (0, b"ok\n")
    assert sh(cri, cid, "test -e /dev/gpu1 || echo absent").stdout == b"absent\n"
    env = sh(cri, cid, "echo $GPU_DRIVER $GPU_VISIBLE").stdout
    assert env == b"stand-in 0\n"
    assert sh(cri, cid, "cat /opt/gpu-libs/libgpu.so").stdout == b"stand-in library\n"
    assert sh(cri, cid, "touch /opt/gpu-libs/x 2>&1; echo $?").stdout.endswith(b"1\n")  # read-only as the spec asks
    assert "4242" in sh(cri, cid, "id -G").stdout.decode().split()
    assert json.loads(hook_out.read_text())["id"] == cid  # runc ran the createRuntime hook with the state

    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_the_annotation_form_and_the_device_cgroup(pulled: Pulled, cdi_dirs: tuple[Path, Path], nodes: Path) -> None:
    """Device plugins of before CDI_devices send annotations; a node's permissions are its cgroup rule."""
    cri, d = pulled.cri, pulled.daemon
    write_spec(cdi_dirs[0], "vendor.json", {
        "cdiVersion": "0.5.0", "kind": "vendor.example/fpga",
        "devices": [{"name": "0", "containerEdits": {"deviceNodes": [
            {"path": "/dev/fpga0", "hostPath": str(nodes / "gpu1"), "permissions": "rw"},
            {"path": "/dev/fpga-ctl", "hostPath": str(nodes / "noop"), "permissions": "r", "fileMode": 0o640}],
            "env": ["FPGA=0"]}}],
    })
    pod = logged_pod(d, "cdi-annotations")
    sid = run_pod(cri, pod)
    config = container_config("app", "sleep", "600", image=pulled.name,
                              annotations={"cdi.k8s.io/fpga-plugin_0": "vendor.example/fpga=0"})
    cid = run_container(cri, sid, pod, config)

    assert sh(cri, cid, "echo $FPGA").stdout == b"0\n"
    assert sh(cri, cid, "echo x > /dev/fpga0 && echo ok").stdout == b"ok\n"
    listing = sh(cri, cid, "ls -l /dev/fpga-ctl").stdout.decode()
    assert listing.startswith("crw-r-----") and f"{NO_DRIVER},   0" in listing, listing
    read = sh(cri, cid, "cat /dev/fpga-ctl 2>&1").stdout.decode()
    assert "No such device or address" in read, read  # allowed by the cgroup, no driver behind it
    write = sh(cri, cid, "echo x 2>&1 > /dev/fpga-ctl").stdout.decode()
    assert "Operation not permitted" in write, write  # "r" only: the cgroup refuses the write

    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def refused(cri: Any, sid: str, pod: api.PodSandboxConfig, config: api.ContainerConfig) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        create(cri, sid, pod, config)
    return err.value


def test_requests_that_cannot_be_resolved_are_refused_leaving_nothing(pulled: Pulled, cdi_dirs: tuple[Path, Path],
                                                                      nodes: Path, tmp_path: Path) -> None:
    cri, d = pulled.cri, pulled.daemon
    static, dynamic = cdi_dirs
    plain = tmp_path / "plain-file"
    plain.write_text("not a device")
    write_spec(static, "good.yaml", {"cdiVersion": "0.6.0", "kind": "example.com/nic", "devices": [
        {"name": "ok", "containerEdits": {"deviceNodes": [{"path": "/dev/nic0", "hostPath": str(nodes / "gpu0")}],
                                          "env": ["NIC=a"]}},
        {"name": "other", "containerEdits": {"env": ["NIC=b"]}},
        {"name": "fake", "containerEdits": {"deviceNodes": [{"path": "/dev/nic1", "hostPath": str(plain)}]}},
        {"name": "gone", "containerEdits": {"deviceNodes": [{"path": "/dev/nic2", "hostPath": str(tmp_path / "gone")}]}},
    ]})
    # Two files of one directory defining the same device: ambiguous.
    for name in ("twice-a.json", "twice-b.json"):
        write_spec(dynamic, name, {"cdiVersion": "0.6.0", "kind": "example.com/dup",
                                   "devices": [{"name": "x", "containerEdits": {"env": [f"FROM={name}"]}}]})
    # Malformed and hostile files are skipped; the good one still serves.
    (dynamic / "garbage.yaml").write_text("cdiVersion: [unterminated")
    (dynamic / "huge.json").write_bytes(b"[" + b"0," * (3 * 1024 * 1024) + b"0]")
    os.mkfifo(dynamic / "fifo.yaml")
    write_spec(dynamic, "climbs.yaml", {"cdiVersion": "0.6.0", "kind": "example.com/evil", "devices": [
        {"name": "x", "containerEdits": {"mounts": [{"hostPath": "/", "containerPath": "/host/../../etc"}]}}]})
    write_spec(dynamic, "relative-hook.yaml", {"cdiVersion": "0.6.0", "kind": "example.com/evil2", "devices": [
        {"name": "x", "containerEdits": {"hooks": [{"hookName": "prestart", "path": "sh"}]}}]})

    pod = logged_pod(d, "cdi-refused")
    sid = run_pod(cri, pod)
    before = snapshot(d)

    def asking(*devices: str, **fields: Any) -> api.ContainerConfig:
        return container_config("app", "sleep", "600", image=pulled.name,
                                CDI_devices=[api.CDIDevice(name=n) for n in devices], **fields)

    cases = [
        (asking("example.com/nic=missing"), grpc.StatusCode.NOT_FOUND, "unresolvable CDI devices example.com/nic=missing"),
        (asking("example.com/evil=x"), grpc.StatusCode.NOT_FOUND, "unresolvable"),
        (asking("example.com/evil2=x"), grpc.StatusCode.NOT_FOUND, "unresolvable"),
        (asking("example.com/dup=x"), grpc.StatusCode.INVALID_ARGUMENT, "ambiguous"),
        (asking("not-qualified"), grpc.StatusCode.INVALID_ARGUMENT, "vendor.com/class=name"),
        (asking(annotations={"cdi.k8s.io/p": "example.com/nic=ok,../../x"}), grpc.StatusCode.INVALID_ARGUMENT, "not of the form"),
        (asking("example.com/nic=ok", "example.com/nic=other"), grpc.StatusCode.INVALID_ARGUMENT, "conflict"),
        (asking("example.com/nic=fake"), grpc.StatusCode.INVALID_ARGUMENT, "not a character or block device"),
        (asking("example.com/nic=gone"), grpc.StatusCode.NOT_FOUND, "does not exist"),
    ]
    for config, code, message in cases:
        err = refused(cri, sid, pod, config)
        assert (err.code(), message in err.details()) == (code, True), (config.CDI_devices, err.details())
    assert changes(before, snapshot(d)) == {}
    skipped = [line for line in d.log_path.read_text().splitlines() if "CDI spec file skipped" in line]
    for name in ("garbage.yaml", "huge.json", "fifo.yaml", "climbs.yaml", "relative-hook.yaml"):
        assert sum(name in line for line in skipped) == 1, (name, skipped)  # once, though read at every create

    cid = run_container(cri, sid, pod, asking("example.com/nic=ok"))
    assert sh(cri, cid, "echo $NIC; ls /dev/nic0").stdout == b"a\n/dev/nic0\n"
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
