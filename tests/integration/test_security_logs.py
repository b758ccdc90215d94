"""Container log paths never follow a symlink: at CreateContainer (a symlink planted in the pod's
log directory) and at ReopenContainerLog (the log directory swapped after the create), and paths
with NUL are refused before anything is made.

Each probe asserts the status, that nothing appeared where the symlink points, and a leak snapshot
of the daemon's directories, mounts, cgroups and processes plus the log directories themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.crilog import written
from tests.support.pods import changes, files_under, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled, container_config, create, logged_pod, pulled_daemon, pulling_from, run_container, status, until,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def refused(call: Callable[[], object], code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    assert text in err.value.details()


def reopen(cri: Cri, container_id: str) -> None:
    cri.runtime.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=container_id))


def leaks(pulled: Pulled) -> dict[str, Any]:
    """The fixture's snapshot's keys, and what is below the daemon's log directories."""
    return {**snapshot(pulled.daemon), "logs": files_under(pulled.daemon.dir / "logs")}


def printer(image: str, **fields: Any) -> api.ContainerConfig:
    """A container printing a numbered line every 50 ms."""
    return container_config("app", "sh", "-c", "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done",
                            image=image, **fields)


def printing(pulled: Pulled, pod_name: str) -> tuple[Path, Path, str, str]:
    """A pod with a printer container whose first line is in its log: (an empty directory a
    symlink may point to, the pod's log directory, the sandbox id, the container id)."""
    target = pulled.daemon.dir / "target"
    target.mkdir()
    pod = logged_pod(pulled.daemon, pod_name)
    sid = run_pod(pulled.cri, pod)
    cid = run_container(pulled.cri, sid, pod, printer(pulled.name))
    until(lambda: bool(written(Path(pod.log_directory) / "app_0.log")), "the first log line")
    return target, Path(pod.log_directory), sid, cid


def test_symlinks_in_the_log_directory_are_refused_at_create(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    target = d.dir / "target"
    target.mkdir()
    pod = logged_pod(d, "plant")
    logs = Path(pod.log_directory)
    sid = run_pod(cri, pod)
    logs.mkdir(parents=True)
    (logs / "app_0.log").symlink_to(target / "stolen")  # the log file itself
    (logs / "sub").symlink_to(target)  # a directory on the way to it
    before = leaks(pulled)

    for log_path, what in (("app_0.log", "not a regular file"), ("sub/0.log", "/sub is a symlink")):
        config = container_config("app", "true", image=pulled.name, log_path=log_path)
        refused(lambda: create(cri, sid, pod, config), grpc.StatusCode.INVALID_ARGUMENT, what)
    # The log directory itself a symlink (to a directory that exists).
    moved = logs.with_name("plant.real")
    logs.rename(moved)
    logs.symlink_to(target)
    refused(lambda: create(cri, sid, pod, container_config("app", "true", image=pulled.name)),
            grpc.StatusCode.INVALID_ARGUMENT, "plant is a symlink")
    logs.unlink()
    moved.rename(logs)

    assert os.listdir(target) == []
    assert changes(before, leaks(pulled)) == {}
    remove_pod(cri, sid)


def test_a_log_directory_swapped_after_create_is_never_written_through(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    target, logs, sid, cid = printing(pulled, "swap")
    log = logs / "app_0.log"

    # Swapped for a symlink: refused, nothing made where it points, the log is written on in its directory.
    moved = logs.with_name("swap.moved")
    logs.rename(moved)
    logs.symlink_to(target)
    refused(lambda: reopen(cri, cid), grpc.StatusCode.FAILED_PRECONDITION, "swap is a symlink")
    assert os.listdir(target) == []
    size = (moved / "app_0.log").stat().st_size
    until(lambda: (moved / "app_0.log").stat().st_size > size, "the log written on in the moved directory")

    # Swapped for another directory: refused too, for it is not the one the log is written in.
    logs.unlink()
    logs.mkdir()
    refused(lambda: reopen(cri, cid), grpc.StatusCode.FAILED_PRECONDITION, "replaced")
    assert os.listdir(logs) == []

    # Put back, with a symlink planted where the new file is made: cleared, then reopened.
    logs.rmdir()
    moved.rename(logs)
    (logs / "app_0.log.tmp").symlink_to(target / "stolen")
    os.rename(log, logs / "app_0.log.1")
    reopen(cri, cid)
    assert log.is_file() and not log.is_symlink() and os.listdir(target) == []
    until(lambda: bool(written(log)), "a line in the reopened log")
    assert status(cri, cid).state == api.CONTAINER_RUNNING

    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_log_paths_with_nul_are_refused_before_anything_is_made(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "nul")
    sid = run_pod(cri, pod)
    volume = d.dir / "never-made"
    # The sandbox_config a request carries is the caller's word: the stored pod's directory is used.
    sent = api.PodSandboxConfig()
    sent.CopyFrom(pod)
    sent.log_directory += "\x00x"
    cid = create(cri, sid, sent, container_config("app", "true", image=pulled.name, log_path="sent.log"))
    assert status(cri, cid).log_path == os.path.join(pod.log_directory, "sent.log")
    cri.runtime.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    before = leaks(pulled)

    bad_pod = logged_pod(d, "nul2")
    bad_pod.log_directory += "\x00x"
    refused(lambda: run_pod(cri, bad_pod), grpc.StatusCode.INVALID_ARGUMENT, "NUL")
    # A mount with a missing host path is made by the spec builder: the log path is checked first.
    mount = api.Mount(container_path="/vol", host_path=str(volume))
    config = container_config("app", "true", image=pulled.name, log_path="app\x00.log", mounts=[mount])
    refused(lambda: create(cri, sid, pod, config), grpc.StatusCode.INVALID_ARGUMENT, "NUL")
    refused(lambda: create(cri, sid, pod, container_config("app", "true", image=pulled.name, log_path="../escape.log",
                                                           mounts=[mount])),
            grpc.StatusCode.INVALID_ARGUMENT, "escapes")

    assert not volume.exists()
    assert changes(before, leaks(pulled)) == {}
    remove_pod(cri, sid)


def test_a_symlink_planted_at_the_log_name_is_replaced_at_reopen(pulled: Pulled) -> None:
    """kubelet renames the log away before ReopenContainerLog; whoever can write in the directory
    may plant a symlink at the name meanwhile: the new log replaces it, nothing is written through."""
    cri, d = pulled.cri, pulled.daemon
    target, logs, sid, cid = printing(pulled, "plantname")
    log = logs / "app_0.log"
    os.rename(log, logs / "app_0.log.1")
    log.symlink_to(target / "stolen")
    reopen(cri, cid)
    assert log.is_file() and not log.is_symlink() and os.listdir(target) == []
    until(lambda: bool(written(log)), "a line in the reopened log")
    assert os.listdir(target) == [] and not (logs / "app_0.log.tmp").exists()
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
