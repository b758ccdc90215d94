"""The start-up probe that decides whether user namespaces are offered (runtime/features.py), and
the idmapped overlay it makes as containers do (image/rootfs.py, linux/idmap.py).

The probe mounts for real, here where it succeeds, and against an image store on ramfs, whose
files cannot be idmapped (no FS_ALLOW_IDMAP): a kernel refusal, not a mock. Either way nothing
stays in this mount namespace or on disk. A daemon whose store is on ramfs offers no user
namespaces, says why in verbose Status, and refuses such a pod with FAILED_PRECONDITION,
leaving nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri_shim.image.rootfs import Rootfs
from cri_shim.image.store import ImageStore
from cri_shim.linux import idmap, userns as userns_holder
from cri_shim.runtime import features
from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.leftovers import release_leftovers
from tests.support.pods import changes, mounts, pod_config, run_pod, snapshot
from tests.support.userns import userns

pytestmark = pytest.mark.integration


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def top() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path sits below a 0700 one)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    subprocess.run(["umount", "-l", str(path / "ramfs")], check=False, capture_output=True)
    shutil.rmtree(path)


def store_and_roots(top: Path, store_root: Path) -> tuple[Rootfs, Path]:
    store = ImageStore(store_root)
    store.open()
    Rootfs(store).recover()  # as the daemon's start-up does: makes the empty staging directory
    roots = top / "rootfs"
    roots.mkdir(mode=0o711)
    return Rootfs(store), roots


def ramfs(top: Path) -> Path:
    path = top / "ramfs"
    path.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(path)], check=True)
    return path


def test_the_probe_mounts_an_idmapped_overlay_here_and_leaves_nothing(top: Path, caplog: pytest.LogCaptureFixture) -> None:
    rootfs, roots = store_and_roots(top, top / "images")
    before, stored = mounts(), files_under(top)
    with caplog.at_level(logging.INFO, logger="cri_shim.runtime"):
        check = asyncio.run(features.probe_userns(rootfs, roots, [roots]))
    assert check.offered and check.problem == "", check
    assert "user namespaces offered" in caplog.text
    assert mounts() == before and files_under(top) == stored


def test_an_image_store_that_cannot_be_idmapped_offers_none_and_says_why(top: Path) -> None:
    rootfs, roots = store_and_roots(top, ramfs(top) / "images")
    before, stored = mounts(), files_under(top)
    check = asyncio.run(features.probe_userns(rootfs, roots, [roots]))
    assert not check.offered
    assert "mount_setattr(idmap)" in check.problem and "Invalid argument" in check.problem, check
    assert mounts() == before and files_under(top) == stored


def test_unreachable_directories_offer_none_without_mounting(top: Path) -> None:
    rootfs, roots = store_and_roots(top, top / "images")
    closed = top / "closed"
    closed.mkdir(mode=0o700)
    check = asyncio.run(features.probe_userns(rootfs, roots, [roots, closed / "infra"]))
    assert not check.offered and str(closed / "infra") in check.problem, check


def test_idmapped_layers_are_attached_only_while_the_overlay_is_mounted(top: Path) -> None:
    """overlayfs before 6.15 takes no detached layer: the copies are attached, then released."""
    rootfs, roots = store_and_roots(top, top / "images")
    before = mounts()

    async def probe_namespace_copies() -> list[str]:
        async with userns_holder.holder([], features.PROBE_IDS) as pid:
            with idmap.attached([str(rootfs.store.empty)], f"/proc/{pid}/ns/user", rootfs.staging) as copies:
                points = {line.split()[0] for line in mounts()}
                inside = [str(c) for c in copies if str(c) in points]
                # The store's root-owned directory shows as the mapping's root.
                assert os.stat(copies[0]).st_uid == features.PROBE_IDS.root()[0]
            return inside

    inside = asyncio.run(probe_namespace_copies())
    assert len(inside) == 1 and inside[0].startswith(str(rootfs.staging)), inside
    assert mounts() == before and list(rootfs.staging.iterdir()) == []


def test_copies_a_crash_left_attached_are_released_at_start_up(top: Path) -> None:
    rootfs, _ = store_and_roots(top, top / "images")
    left = rootfs.staging / "crashed"
    (left / "0").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(rootfs.store.empty), str(left / "0")], check=True)
    rootfs.recover()
    assert list(rootfs.staging.iterdir()) == []  # rmdir of the entry succeeded: it was unmounted first


def refuses_user_namespace_pods(d: Daemon, problem: str) -> None:
    """Starts d and checks that it offers no user namespaces, says why (problem in the reason),
    and refuses a pod with one with FAILED_PRECONDITION saying why again (kubelet shows it in
    the pod's events), leaving nothing."""
    d.start()
    cri = Cri(d.endpoint)
    status = cri.runtime.Status(api.StatusRequest(verbose=True))
    assert status.runtime_handlers and not any(h.features.user_namespaces for h in status.runtime_handlers)
    found = json.loads(status.info["userNamespaces"])
    assert found["offered"] is False and problem in found["problem"], found
    assert "user namespaces not offered" in d.log_path.read_text()
    before = snapshot(d)
    config = pod_config("userns-refused", linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(namespace_options=userns(1300000))))
    with pytest.raises(grpc.RpcError) as err:
        run_pod(cri, config)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert "does not support user namespaces" in err.value.details() and problem in err.value.details(), err.value.details()
    # The pod asked for the default handler: the message names the handler that is, not ''.
    assert "runtime handler ''" not in err.value.details(), err.value.details()
    assert changes(before, snapshot(d)) == {}
    cri.close()


def test_a_daemon_whose_store_cannot_be_idmapped_refuses_user_namespace_pods_and_leaves_nothing() -> None:
    d = Daemon()
    images = Path(d.config["paths"]["state_dir"]) / "images"
    images.mkdir(parents=True)
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(images)], check=True)
    try:
        refuses_user_namespace_pods(d, "mount_setattr(idmap)")
    finally:
        d.stop()
        release_leftovers(d)
        subprocess.run(["umount", "-l", str(images)], check=False)
        shutil.rmtree(d.dir, ignore_errors=True)


def test_a_host_whose_directories_the_pods_root_cannot_reach_offers_no_user_namespaces() -> None:
    d = Daemon()
    d.dir.chmod(0o700)  # above the state and run directories: the pod's root could not reach its root
    try:
        refuses_user_namespace_pods(d, "not every user may traverse")
    finally:
        d.stop()
        release_leftovers(d)
        shutil.rmtree(d.dir, ignore_errors=True)


def test_what_a_crash_left_of_the_probe_and_of_attached_layers_goes_at_start_up() -> None:
    d = Daemon()
    state = Path(d.config["paths"]["state_dir"])
    probe = state / "rootfs" / f"{features.PROBE_PREFIX}crashed"
    for name in ("upper", "work", "rootfs"):
        (probe / name).mkdir(parents=True)
    attached = state / "images" / "idmapped" / "crashed" / "0"
    attached.mkdir(parents=True)
    subprocess.run(["mount", "--bind", "/usr", str(attached)], check=True)
    try:
        d.start()
        assert not probe.exists() and list(attached.parent.parent.iterdir()) == []
        assert not [m for m in mounts() if m.startswith(str(state))]
    finally:
        d.stop()
        release_leftovers(d)
        shutil.rmtree(d.dir, ignore_errors=True)
