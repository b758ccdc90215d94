"""Image volumes (Mount.image, kubelet's ImageVolume feature) through a real daemon: the image's
files at the mount point, read-only, a sub path of it, what is refused, and nothing left after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import api
from tests.support.imagevolumes import image_mount, push_volume_image
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    FOREVER,
    Pulled,
    container_config,
    create,
    exec_sync,
    listed,
    logged_pod,
    pull,
    pulled_daemon,
    pulling_from,
    remove,
    run_container,
    status,
    stop,
    until,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


@pytest.fixture(scope="module")
def volume_ref(registry: Registry) -> str:
    return push_volume_image(registry)


@pytest.fixture
def volume(pulled: Pulled, volume_ref: str) -> Iterator[str]:
    """The volume image pulled (as kubelet does before it creates the container); its id."""
    yield pull(pulled.cri, volume_ref)


def sh(pulled: Pulled, cid: str, script: str) -> str:
    answer = exec_sync(pulled.cri, cid, "sh", "-c", script)
    assert answer.exit_code == 0, answer
    return answer.stdout.decode()


def run_with_volume(pulled: Pulled, volume: str, pod_name: str) -> tuple[str, str, dict[str, Any]]:
    """A pod and a container in it with the volume image at /vol: (pod id, container id, the leak
    snapshot with the pod alone)."""
    pod = logged_pod(pulled.daemon, pod_name)
    sid = run_pod(pulled.cri, pod)
    before = snapshot(pulled.daemon)
    config = container_config("app", "sh", "-c", FOREVER, image=pulled.image, mounts=[image_mount("/vol", volume)])
    return sid, run_container(pulled.cri, sid, pod, config), before


def test_the_image_is_mounted_read_only_and_released_with_the_container(pulled: Pulled, volume: str) -> None:
    cri = pulled.cri
    sid, cid, before = run_with_volume(pulled, volume, "imgvol")
    assert sh(pulled, cid, "cat /vol/data/hello.txt /vol/data/layer2.txt /vol/data/sub/inner.txt /vol/etc/marker") == \
        "hello\nsecond layer\ninner\nimage etc\n"
    assert sh(pulled, cid, "ls /vol/data").split() == ["abs", "dangling", "hello.txt", "layer2.txt", "sub", "up"]
    denied = exec_sync(cri, cid, "sh", "-c", "touch /vol/data/new || mkdir /vol/x")
    assert denied.exit_code != 0 and b"Read-only file system" in denied.stderr, denied
    assert "ro" in sh(pulled, cid, "awk '$5 == \"/vol\" {print $6}' /proc/self/mountinfo").strip().split(",")
    shown = [m for m in status(cri, cid).mounts if m.container_path == "/vol"]
    assert len(shown) == 1 and shown[0].image.image == volume and shown[0].readonly
    remove(cri, cid)
    assert changes(before, snapshot(pulled.daemon)) == {}, pulled.daemon.log_tail()
    remove_pod(cri, sid)


def test_the_volume_is_unmounted_at_the_exit(pulled: Pulled, volume: str) -> None:
    """Image volumes, read-only, hold nothing of the container's: its exit releases them with its
    root's mount, off the RPC path; RemoveContainer then leaves nothing."""
    cri = pulled.cri
    sid, cid, before = run_with_volume(pulled, volume, "imgvol-exit")
    container_dir = Path(pulled.daemon.config["paths"]["state_dir"]) / "rootfs" / cid
    assert os.path.ismount(container_dir / "images" / "0") and os.path.ismount(container_dir / "rootfs")
    stop(cri, cid)
    until(lambda: not (container_dir / "images").exists() and not os.path.ismount(container_dir / "rootfs"),
          "the volume and the root unmounted at the exit")
    remove(cri, cid)
    assert changes(before, snapshot(pulled.daemon)) == {}, pulled.daemon.log_tail()
    remove_pod(cri, sid)


@pytest.mark.parametrize(("sub_path", "listing"), [
    ("data/sub", "inner.txt"),
    ("data/abs", "marker"),  # a symlink to /etc: the image's /etc
    ("data/up/etc", "marker"),  # a symlink above the root ends at the image's root
    ("./data/sub/", "inner.txt"),
])
def test_a_sub_path_is_resolved_inside_the_image(pulled: Pulled, volume: str, sub_path: str, listing: str) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "imgvol-sub")
    sid = run_pod(cri, pod)
    before = snapshot(pulled.daemon)
    config = container_config("app", "sh", "-c", FOREVER, image=pulled.image, mounts=[image_mount("/vol", volume, sub_path)])
    cid = run_container(cri, sid, pod, config)
    assert sh(pulled, cid, "ls /vol").split() == [listing]
    remove(cri, cid)
    assert changes(before, snapshot(pulled.daemon)) == {}, pulled.daemon.log_tail()
    remove_pod(cri, sid)


@pytest.mark.parametrize(("mount", "code", "words"), [
    (lambda v: image_mount("/vol", "sha256:" + "0" * 64), grpc.StatusCode.NOT_FOUND, "not found"),
    (lambda v: image_mount("/vol", v, "../etc"), grpc.StatusCode.INVALID_ARGUMENT, "without '..'"),
    (lambda v: image_mount("/vol", v, "data/../../etc"), grpc.StatusCode.INVALID_ARGUMENT, "without '..'"),
    (lambda v: image_mount("/vol", v, "/etc"), grpc.StatusCode.INVALID_ARGUMENT, "relative"),
    (lambda v: image_mount("/vol", v, "data/missing"), grpc.StatusCode.NOT_FOUND, "not found in image"),
    (lambda v: image_mount("/vol", v, "data/dangling"), grpc.StatusCode.NOT_FOUND, "not found in image"),
    (lambda v: image_mount("/vol", v, "data/hello.txt"), grpc.StatusCode.INVALID_ARGUMENT, "not a directory"),
    (lambda v: image_mount("/vol", v, readonly=False), grpc.StatusCode.INVALID_ARGUMENT, "read-only"),
    (lambda v: api.Mount(container_path="/vol", host_path="/tmp", image=api.ImageSpec(image=v), readonly=True),
     grpc.StatusCode.INVALID_ARGUMENT, "host path"),
], ids=["absent-image", "dotdot", "inner-dotdot", "absolute", "missing", "dangling-link", "file", "writable", "host-path"])
def test_what_cannot_be_mounted_is_refused_and_leaves_nothing(pulled: Pulled, volume: str, mount: Any,
                                                              code: grpc.StatusCode, words: str) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "imgvol-bad")
    sid = run_pod(cri, pod)
    before = snapshot(pulled.daemon)
    # A good image volume first, so that a refusal after it must release what it mounted.
    config = container_config("app", "sleep", "600", image=pulled.image, mounts=[image_mount("/ok", volume), mount(volume)])
    with pytest.raises(grpc.RpcError) as refused:
        create(cri, sid, pod, config)
    assert refused.value.code() == code and words in refused.value.details(), refused.value.details()
    assert listed(cri) == []
    assert changes(before, snapshot(pulled.daemon)) == {}, pulled.daemon.log_tail()
    remove_pod(cri, sid)


def test_the_image_stays_while_a_volume_uses_it(pulled: Pulled, volume: str) -> None:
    """RemoveImage while the volume is mounted: the name goes, the mounted layers stay until the container does."""
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "imgvol-rmi")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("app", "sh", "-c", FOREVER, image=pulled.image,
                                                        mounts=[image_mount("/vol", volume)]))
    cri.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=volume)))
    assert sh(pulled, cid, "cat /vol/data/hello.txt") == "hello\n"
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}, pulled.daemon.log_tail()
