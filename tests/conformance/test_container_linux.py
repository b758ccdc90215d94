"""critest "Container Mount Propagation", "Container OOM" and "Container Mount Readonly" specs
(pkg/validate/container_linux.go). Mounts on the "host" side are made in scripts/test's private
mount namespace, which the daemon under test shares."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import PAUSE_COMMAND, Framework, eventually, expect_rejected

pytestmark = pytest.mark.conformance

MIB = 1024 * 1024


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def privileged_pod(f: Framework) -> tuple[str, cri.PodSandboxConfig]:
    """critest's createPrivilegedPodSandbox(true)."""
    return f.security_pod("create-Privileged-PodSandbox-for-container-", privileged=True)


# Mount propagation ---------------------------------------------------------------------------


@pytest.fixture
def propagation_dirs(privileged_pod: tuple[str, cri.PodSandboxConfig]) -> Iterator[tuple[Path, Path, Path]]:
    """critest's createHostPathForMountPropagation: (mnt source, propagation source dir, mount point);
    the source is bind-mounted on itself, its propagation set by the spec."""
    host = Path(tempfile.mkdtemp(prefix="test" + privileged_pod[0]))
    source, point, src_dir = host / "mnt", host / "mnt/propagationMnt", host / "propagationSrcDir"
    point.mkdir(parents=True, mode=0o700)
    src_dir.mkdir(mode=0o700)
    (src_dir / "flagFile").touch()
    mount("--rbind", str(source), str(source))
    yield source, src_dir, point
    umount(source / "containerMntPoint")
    umount(point)
    umount(source)
    shutil.rmtree(host, ignore_errors=True)


def propagation_seen(f: Framework, pod: tuple[str, cri.PodSandboxConfig], dirs: tuple[Path, Path, Path],
                     propagation: int) -> tuple[bool, bool]:
    """(host mount seen in the container, container mount seen on the host)."""
    source, src_dir, point = dirs
    mount("--make-rshared" if propagation != cri.PROPAGATION_PRIVATE else "--make-rprivate", str(source))
    mnt = cri.Mount(host_path=str(source), container_path=str(source), propagation=propagation)
    spec = f.container_config("mount-propagation-test-", command=PAUSE_COMMAND, mounts=[mnt])
    spec.linux.security_context.privileged = True
    container_id = f.create_container(spec, *pod)
    status = f.rc.ContainerStatus(cri.ContainerStatusRequest(container_id=container_id, verbose=True)).status
    assert len(status.mounts) == 1
    got = status.mounts[0]
    assert (got.container_path, got.host_path, got.readonly, got.selinux_relabel, got.propagation) == (
        str(source), str(source), False, False, propagation)
    f.start_and_wait(container_id)
    mount("--rbind", str(src_dir), str(point))
    host_to_container = f.exec_ok(container_id, ["ls", "-A", str(point)]) != b""
    container_point = source / "containerMntPoint"
    f.exec_ok(container_id, ["sh", "-c", f"mkdir -p {container_point}"])
    f.exec_ok(container_id, ["sh", "-c", f"mount --bind /etc {container_point}"])
    container_to_host = any(container_point.iterdir())
    return host_to_container, container_to_host


def test_mount_with_rprivate_should_not_support_propagation(f: Framework, privileged_pod: tuple[str, cri.PodSandboxConfig],
                                                           propagation_dirs: tuple[Path, Path, Path]) -> None:
    assert propagation_seen(f, privileged_pod, propagation_dirs, cri.PROPAGATION_PRIVATE) == (False, False)


def test_mount_with_rshared_should_support_propagation_from_host_to_container_and_vice_versa(
        f: Framework, privileged_pod: tuple[str, cri.PodSandboxConfig], propagation_dirs: tuple[Path, Path, Path]) -> None:
    assert propagation_seen(f, privileged_pod, propagation_dirs, cri.PROPAGATION_BIDIRECTIONAL) == (True, True)


def test_mount_with_rslave_should_support_propagation_from_host_to_container(
        f: Framework, privileged_pod: tuple[str, cri.PodSandboxConfig], propagation_dirs: tuple[Path, Path, Path]) -> None:
    assert propagation_seen(f, privileged_pod, propagation_dirs, cri.PROPAGATION_HOST_TO_CONTAINER) == (True, False)


# OOM -----------------------------------------------------------------------------------------


def test_should_terminate_with_exitcode_137_and_reason_oomkilled(f: Framework,
                                                                 privileged_pod: tuple[str, cri.PodSandboxConfig]) -> None:
    resources = cri.LinuxContainerResources(memory_limit_in_bytes=15 * MIB, memory_swap_limit_in_bytes=15 * MIB)
    spec = f.container_config("OOM-test-", command=["sh", "-c", "dd if=/dev/zero of=/dev/null bs=20M"],
                              linux=cri.LinuxContainerConfig(resources=resources))
    container_id = f.create_container(spec, *privileged_pod)
    f.rc.ContainerStatus(cri.ContainerStatusRequest(container_id=container_id, verbose=True))
    f.start_container(container_id)
    f.wait_state(container_id, cri.CONTAINER_EXITED)
    status = eventually(lambda: f.container_status(container_id), lambda s: s.reason == "OOMKilled", what="reason OOMKilled")
    assert status.exit_code == 137


# Readonly mounts -----------------------------------------------------------------------------


def runtime_supports_rro(f: Framework) -> bool:
    handlers = f.rc.Status(cri.StatusRequest()).runtime_handlers
    return any(h.name == "" and h.features.recursive_read_only_mounts for h in handlers)


@pytest.fixture
def rro_dir(privileged_pod: tuple[str, cri.PodSandboxConfig]) -> Iterator[Path]:
    """critest's createHostPathForRROMount: a temp dir with a tmpfs mounted at tmpfs/."""
    host = Path(tempfile.mkdtemp(prefix="test" + privileged_pod[0]))
    (host / "tmpfs").mkdir(mode=0o700)
    mount("-t", "tmpfs", "none", str(host / "tmpfs"))
    yield host
    umount(host / "tmpfs")
    shutil.rmtree(host, ignore_errors=True)


def mount_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig], mounts: list[cri.Mount]) -> str:
    spec = f.container_config("test-mount-", command=PAUSE_COMMAND, mounts=mounts)
    container_id = f.create_container(spec, *pod)
    status = f.rc.ContainerStatus(cri.ContainerStatusRequest(container_id=container_id, verbose=True)).status
    assert len(status.mounts) == len(mounts)
    return container_id


def readonly_mount(f: Framework, pod: tuple[str, cri.PodSandboxConfig], host: Path, rro: bool) -> None:
    if rro and not runtime_supports_rro(f):
        pytest.skip("runtime does not implement recursive readonly mounts (critest skips too)")
    mnt = cri.Mount(host_path=str(host), container_path="/mnt", readonly=True, recursive_read_only=rro, selinux_relabel=True)
    container_id = mount_container(f, pod, [mnt])
    f.start_and_wait(container_id)
    command = ["sh", "-c", 'touch /mnt/tmpfs/foo 2>&1 | grep -q "Read-only file system"'] if rro else ["touch", "/mnt/tmpfs/file"]
    f.exec_ok(container_id, command)


def test_should_support_non_recursive_readonly_mounts(f: Framework, privileged_pod: tuple[str, cri.PodSandboxConfig],
                                                      rro_dir: Path) -> None:
    readonly_mount(f, privileged_pod, rro_dir, False)


def test_should_support_recursive_readonly_mounts(f: Framework, privileged_pod: tuple[str, cri.PodSandboxConfig],
                                                  rro_dir: Path) -> None:
    readonly_mount(f, privileged_pod, rro_dir, True)


def rro_rejected(f: Framework, pod: tuple[str, cri.PodSandboxConfig], host: Path, readonly: bool, propagation: int) -> None:
    if not runtime_supports_rro(f):
        pytest.skip("runtime does not implement recursive readonly mounts (critest skips too)")
    mnt = cri.Mount(host_path=str(host), container_path="/mnt", readonly=readonly, recursive_read_only=True,
                    selinux_relabel=True, propagation=propagation)
    spec = f.container_config("test-mount-", command=PAUSE_COMMAND, mounts=[mnt])
    expect_rejected(lambda: f.create_container_with_error(spec, *pod))


def test_should_reject_a_recursive_readonly_mount_with_propagation_host_to_container(
        f: Framework, privileged_pod: tuple[str, cri.PodSandboxConfig], rro_dir: Path) -> None:
    rro_rejected(f, privileged_pod, rro_dir, True, cri.PROPAGATION_HOST_TO_CONTAINER)


def test_should_reject_a_recursive_readonly_mount_with_propagation_bidirectional(
        f: Framework, privileged_pod: tuple[str, cri.PodSandboxConfig], rro_dir: Path) -> None:
    rro_rejected(f, privileged_pod, rro_dir, True, cri.PROPAGATION_BIDIRECTIONAL)


def test_should_reject_a_recursive_readonly_mount_with_readonly_false(
        f: Framework, privileged_pod: tuple[str, cri.PodSandboxConfig], rro_dir: Path) -> None:
    rro_rejected(f, privileged_pod, rro_dir, False, cri.PROPAGATION_PRIVATE)
