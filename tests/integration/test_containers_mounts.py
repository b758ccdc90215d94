"""Mounts as containers see them: propagation, read-only forms, pod files, devices."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import FailedPrecondition, InvalidArgument
from tests.support.containers import Harness, module_harness, output

pytestmark = pytest.mark.integration
_ = module_harness  # the module-wide `h` fixture


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


@pytest.fixture
def shared_dir(h: Harness, tmp_path: Path) -> Iterator[Path]:
    """A host directory on a mount of its own, made shared (scripts/test runs in a private mount ns)."""
    d = h.dir / f"shared-{os.urandom(4).hex()}"
    d.mkdir()
    sh("mount", "--bind", str(d), str(d))
    sh("mount", "--make-shared", str(d))
    yield d
    sh("umount", "-R", "-l", str(d))


def privileged(h: Harness, *command: str) -> tuple[api.ContainerConfig, api.PodSandboxConfig]:
    cfg = h.config(*command)
    cfg.linux.security_context.privileged = True
    sc = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="pod", namespace="ns", uid="u"))
    sc.linux.security_context.privileged = True
    return cfg, sc


def mounted_inside(h: Harness, rec_id: str, path: str) -> bool:
    res = h.run(h.runtime.exec_sync(h.get(rec_id), ["sh", "-c", f"grep -c ' {path} ' /proc/mounts || true"], 10))
    return res.stdout.strip() != b"0"


def on_host(path: Path) -> bool:
    return f" {path} " in Path("/proc/self/mountinfo").read_text()


@pytest.mark.parametrize("propagation", [api.PROPAGATION_PRIVATE, api.PROPAGATION_HOST_TO_CONTAINER, api.PROPAGATION_BIDIRECTIONAL])
def test_mount_propagation(h: Harness, shared_dir: Path, propagation: int) -> None:
    cfg, sc = privileged(h, "sleep", "100000")
    cfg.mounts.add(container_path="/mnt/vol", host_path=str(shared_dir), propagation=propagation)
    rec = h.start(h.create(cfg, sandbox_config=sc))
    spec_mount = next(m for m in json.load(open(Path(rec.bundle) / "config.json"))["mounts"] if m["destination"] == "/mnt/vol")
    assert {"rprivate": api.PROPAGATION_PRIVATE, "rslave": api.PROPAGATION_HOST_TO_CONTAINER,
            "rshared": api.PROPAGATION_BIDIRECTIONAL}[spec_mount["options"][1]] == propagation
    # host -> container
    (shared_dir / "fromhost").mkdir()
    sh("mount", "-t", "tmpfs", "tmpfs", str(shared_dir / "fromhost"))
    assert mounted_inside(h, rec.id, "/mnt/vol/fromhost") == (propagation != api.PROPAGATION_PRIVATE)
    # container -> host
    (shared_dir / "fromctr").mkdir()
    h.run(h.runtime.exec_sync(h.get(rec.id), ["mount", "-t", "tmpfs", "tmpfs", "/mnt/vol/fromctr"], 10))
    assert mounted_inside(h, rec.id, "/mnt/vol/fromctr")
    assert on_host(shared_dir / "fromctr") == (propagation == api.PROPAGATION_BIDIRECTIONAL)
    h.run(h.runtime.remove(rec))
    assert list(rec.config.mounts) == [api.Mount(container_path="/mnt/vol", host_path=str(shared_dir), propagation=propagation)]


def test_propagation_needs_a_propagating_host_mount(h: Harness) -> None:
    d = h.dir / "private-vol"
    d.mkdir(exist_ok=True)
    cfg, sc = privileged(h, "true")
    cfg.mounts.add(container_path="/mnt", host_path=str(d), propagation=api.PROPAGATION_BIDIRECTIONAL)
    with pytest.raises(FailedPrecondition, match="shared"):
        h.create(cfg, sandbox_config=sc)


def test_readonly_bind_is_not_recursive_but_rro_is(h: Harness) -> None:
    d = h.dir / "ro-vol"
    (d / "sub").mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "tmpfs", str(d / "sub"))
    try:
        cfg = h.config("sh", "-c", "touch /mnt/top 2>&1; touch /mnt/sub/file && echo sub-ok")
        cfg.mounts.add(container_path="/mnt", host_path=str(d), readonly=True)
        out, _, _ = output(h, cfg)
        assert "Read-only file system" in out and "sub-ok" in out
        cfg = h.config("sh", "-c", "touch /mnt/sub/file2 2>&1; echo done")
        cfg.mounts.add(container_path="/mnt", host_path=str(d), readonly=True, recursive_read_only=True)
        out, _, _ = output(h, cfg)
        assert "Read-only file system" in out
    finally:
        sh("umount", "-l", str(d / "sub"))


@pytest.mark.parametrize("bad", [
    {"readonly": False, "recursive_read_only": True},
    {"readonly": True, "recursive_read_only": True, "propagation": api.PROPAGATION_HOST_TO_CONTAINER},
    {"readonly": True, "recursive_read_only": True, "propagation": api.PROPAGATION_BIDIRECTIONAL},
])
def test_rro_rejections_leave_nothing(h: Harness, bad: dict) -> None:
    before = set(os.listdir(h.dir / "bundles"))
    cfg = h.config("true")
    missing = h.dir / f"never-created-{os.urandom(4).hex()}"
    cfg.mounts.add(container_path="/mnt", host_path=str(missing), **bad)
    with pytest.raises(InvalidArgument):
        h.create(cfg)
    assert set(os.listdir(h.dir / "bundles")) == before and not missing.exists()


def test_symlinked_and_missing_host_paths(h: Harness) -> None:
    target = h.dir / "real-vol"
    target.mkdir(exist_ok=True)
    (target / "marker").write_text("here")
    link = h.dir / "link-vol"
    if not link.exists():
        link.symlink_to(target)
    missing = h.dir / "made" / "by-create"
    cfg = h.config("sh", "-c", "cat /a/marker; echo; ls -d /b")
    cfg.mounts.add(container_path="/a", host_path=str(link))
    cfg.mounts.add(container_path="/b", host_path=str(missing))
    out, _, _ = output(h, cfg)
    assert out.splitlines() == ["here", "/b"]
    assert missing.is_dir()


def test_single_file_bind_and_pod_files(h: Harness) -> None:
    pod = h.dir / "pod"
    pod.mkdir(exist_ok=True)
    for name, text in (("hostname", "podhost\n"), ("hosts", "127.0.0.1 localhost podhost\n"), ("resolv.conf", "nameserver 10.10.10.10\n")):
        (pod / name).write_text(text)
    shm = pod / "shm"
    shm.mkdir(exist_ok=True)
    term = pod / "termination-log"
    term.write_text("")
    sandbox = h.sandbox(hostname_path=str(pod / "hostname"), hosts_path=str(pod / "hosts"),
                        resolv_conf_path=str(pod / "resolv.conf"), shm_path=str(shm))
    cfg = h.config("sh", "-c", "cat /etc/hostname /etc/hosts /etc/resolv.conf; echo bye > /dev/termination-log; "
                   "touch /dev/shm/x; touch /etc/hosts 2>&1 | grep -c Read-only")
    cfg.linux.security_context.readonly_rootfs = True
    cfg.mounts.add(container_path="/dev/termination-log", host_path=str(term))
    out, _, _ = output(h, cfg, sandbox=sandbox)
    assert out.splitlines() == ["podhost", "127.0.0.1 localhost podhost", "nameserver 10.10.10.10", "1"]
    assert term.read_text() == "bye\n" and (shm / "x").exists()


def test_cri_mount_replaces_pod_file(h: Harness) -> None:
    mine = h.dir / "my-hosts"
    mine.write_text("1.2.3.4 mine\n")
    other = h.dir / "pod-hosts"
    other.write_text("5.6.7.8 pod\n")
    cfg = h.config("cat", "/etc/hosts")
    cfg.mounts.add(container_path="/etc/hosts", host_path=str(mine))
    assert output(h, cfg, sandbox=h.sandbox(hosts_path=str(other)))[0] == "1.2.3.4 mine"


def test_devices(h: Harness) -> None:
    cfg = h.config("sh", "-c", "ls -l /dev/mynull | cut -c1; echo x > /dev/mynull && echo wrote")
    cfg.devices.add(container_path="/dev/mynull", host_path="/dev/null", permissions="rwm")
    assert output(h, cfg)[0].splitlines() == ["c", "wrote"]
    for permissions, expected in (("r", "opened"), ("w", "denied")):
        cfg = h.config("sh", "-c", "(exec 3</dev/lc) 2>/dev/null && echo opened || echo denied")
        cfg.devices.add(container_path="/dev/lc", host_path="/dev/loop-control", permissions=permissions)
        assert output(h, cfg)[0] == expected, permissions

