"""critest "Container" specs (pkg/validate/container.go): lifecycle, execSync, stats, volumes, logs."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import ATTEMPT, PAUSE_COMMAND, STOP_TIMEOUT, Framework, eventually, new_uuid
from tests.support.standin_images import BUSYBOX

pytestmark = pytest.mark.conformance

DEFAULT_LOG = "hello World"


@pytest.fixture
def pod(f: Framework) -> tuple[str, cri.PodSandboxConfig]:
    """critest's BeforeEach of the basic and volume contexts (the AfterEach is f.cleanup)."""
    return f.create_pod_sandbox_for_container()


def listed(f: Framework, container_id: str) -> bool:
    return any(c.id == container_id for c in f.list_containers(cri.ContainerFilter(id=container_id)))


def stop_within_timeout(f: Framework, container_id: str) -> None:
    """critest's testStopContainer: StopContainer(60) must return before its 60 s guard, then EXITED."""
    done = threading.Event()
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            f.stop_container(container_id, STOP_TIMEOUT)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    assert done.wait(STOP_TIMEOUT), f"stop container {container_id} timeout"
    assert not errors, errors
    f.wait_state(container_id, cri.CONTAINER_EXITED)


def stats_ids(f: Framework, filt: cri.ContainerStatsFilter | None) -> set[str]:
    resp = f.rc.ListContainerStats(cri.ListContainerStatsRequest(filter=filt))
    return {s.attributes.id for s in resp.stats}


def test_runtime_should_support_creating_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_default_container(*pod, "container-for-create-")
    assert listed(f, container_id), "Container should be created"


def test_runtime_should_support_preserving_container_attributes(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    name = "container-with-attributes-" + new_uuid()
    metadata = cri.ContainerMetadata(name=name, attempt=ATTEMPT)
    labels = {"foo": "bar", "io.kubernetes.container.name": name, "io.kubernetes.pod.name": "fake-pod-name",
              "io.kubernetes.pod.namespace": "fake-pod-namespace", "io.kubernetes.pod.uid": "fake-pod-uid"}
    annotations = {"abc": "def"}
    config = cri.ContainerConfig(metadata=metadata, image=cri.ImageSpec(image=BUSYBOX), labels=labels, annotations=annotations)
    container_id = f.create_container(config, *pod)
    status = f.container_status(container_id)
    containers = f.list_containers(cri.ContainerFilter(id=container_id))
    assert len(containers) == 1
    for seen in (status, containers[0]):
        assert seen.metadata.name == name and seen.metadata.attempt == ATTEMPT
        assert labels.items() <= dict(seen.labels).items()
        assert annotations.items() <= dict(seen.annotations).items()


def test_runtime_should_support_starting_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    f.start_and_wait(f.create_default_container(*pod, "container-for-start-test-"))


def test_runtime_should_support_stopping_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_default_container(*pod, "container-for-stop-test-")
    f.start_container(container_id)
    stop_within_timeout(f, container_id)


def test_runtime_should_support_removing_created_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_pause_container(*pod, "container-for-remove-created-test-")
    f.remove_container(container_id)
    assert not listed(f, container_id), "Container should be removed"


def test_runtime_should_support_removing_running_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_pause_container(*pod, "container-for-remove-running-test-")
    f.start_container(container_id)
    f.remove_container(container_id)
    assert not listed(f, container_id), "Container should be removed"


def test_runtime_should_support_removing_stopped_container(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_pause_container(*pod, "container-for-remove-stopped-test-")
    f.start_container(container_id)
    stop_within_timeout(f, container_id)
    f.remove_container(container_id)
    assert not listed(f, container_id), "Container should be removed"


def test_runtime_should_support_execsync(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_default_container(*pod, "container-for-execSync-test-")
    f.start_container(container_id)
    resp = f.exec_sync(container_id, ["echo", "-n", "hello"], timeout=30)
    assert resp.exit_code == 0
    assert resp.stderr == b"", "The stderr should be empty."
    assert resp.stdout == b"hello"


def test_runtime_should_support_execsync_with_timeout(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_default_container(*pod, "container-for-execSync-timeout-test-")
    f.start_container(container_id)
    # critest wants an error: cri-client makes one of DEADLINE_EXCEEDED (a timeout) and of a non-zero exit.
    try:
        timed_out = f.exec_sync(container_id, ["sleep", "4321"], timeout=1).exit_code != 0
    except grpc.RpcError:
        timed_out = True
    assert timed_out, "execSync should timeout"
    resp = f.exec_sync(container_id, ["sh", "-c", "pgrep sleep || true"], timeout=30)
    assert resp.exit_code == 0
    assert resp.stderr == b""
    assert resp.stdout.strip() == b"", "the timed-out exec must have been killed"


def test_runtime_should_support_listing_container_stats(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_default_container(*pod, "container-for-stats-")
    f.start_container(container_id)
    stats = f.rc.ContainerStats(cri.ContainerStatsRequest(container_id=container_id)).stats
    assert stats.attributes.id == container_id
    assert "container-for-stats-" in stats.attributes.metadata.name
    assert stats.cpu.timestamp != 0
    assert stats.memory.timestamp != 0


def test_runtime_should_support_listing_stats_for_started_containers(f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_default_container(*pod, "container-for-stats-")
    f.start_container(container_id)
    assert container_id in stats_ids(f, cri.ContainerStatsFilter(id=container_id))


def test_runtime_should_support_listing_stats_for_started_containers_when_filter_is_nil(
        f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    container_id = f.create_default_container(*pod, "container-for-stats-with-nil-filter-")
    f.start_container(container_id)
    assert container_id in stats_ids(f, None)


def test_runtime_should_support_listing_stats_for_three_created_containers_when_filter_is_nil(
        f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    ids = [f.create_default_container(*pod, "container-for-stats-with-nil-filter-") for _ in range(3)]
    for container_id in ids:
        f.start_container(container_id)
    assert set(ids) <= stats_ids(f, None)


def test_runtime_should_support_listing_stats_for_containers_filtered_by_labels(
        f: Framework, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    labels = {"foo": "bar"}
    container_id = f.create_default_container(*pod, "container-for-stats-with-labels-", labels=labels)
    f.start_container(container_id)
    assert container_id in stats_ids(f, cri.ContainerStatsFilter(label_selector=labels)), "Container should be found"
    assert container_id not in stats_ids(f, cri.ContainerStatsFilter(label_selector={"foo": "baz"})), "Container should be filtered"


@pytest.fixture
def host_path(pod: tuple[str, cri.PodSandboxConfig]) -> Iterator[Path]:
    """critest's createHostPath: a temp dir holding testVolume.file."""
    path = Path(tempfile.mkdtemp(prefix="test" + pod[0]))
    (path / "testVolume.file").touch()
    yield path
    for leftover in (path, Path(f"{path}-symlink")):
        if leftover.is_symlink():
            leftover.unlink()
        elif leftover.exists():
            (leftover / "testVolume.file").unlink(missing_ok=True)
            os.rmdir(leftover)


def volume_container_lists(f: Framework, pod: tuple[str, cri.PodSandboxConfig], prefix: str, path: str) -> None:
    """critest's createVolumeContainer + start + `ls -A <path>` in the container (non-empty, no stderr)."""
    mount = cri.Mount(host_path=path, container_path=path, selinux_relabel=True)
    container_id = f.create_container(f.container_config(prefix, command=PAUSE_COMMAND, mounts=[mount]), *pod)
    f.start_and_wait(container_id)
    resp = f.exec_sync(container_id, ["ls", "-A", path], timeout=30)
    assert resp.exit_code == 0 and resp.stderr == b""
    assert resp.stdout, "len(output) should not be zero."


def test_runtime_should_support_starting_container_with_volume(
        f: Framework, pod: tuple[str, cri.PodSandboxConfig], host_path: Path) -> None:
    volume_container_lists(f, pod, "container-with-volume-test-", str(host_path))


def test_runtime_should_support_starting_container_with_volume_when_host_path_is_a_symlink(
        f: Framework, pod: tuple[str, cri.PodSandboxConfig], host_path: Path) -> None:
    symlink = Path(f"{host_path}-symlink")
    symlink.symlink_to(host_path)
    volume_container_lists(f, pod, "container-with-symlink-host-path-test-", str(symlink))


def log_container(f: Framework, pod_id: str, pod_config: cri.PodSandboxConfig, prefix: str, command: list[str]) -> tuple[str, str]:
    name = prefix + new_uuid()
    config = cri.ContainerConfig(metadata=cri.ContainerMetadata(name=name, attempt=ATTEMPT), image=cri.ImageSpec(image=BUSYBOX),
                                 command=command, log_path=name + ".log")
    return config.log_path, f.create_container(config, pod_id, pod_config)


def test_runtime_should_support_starting_container_with_log(f: Framework) -> None:
    pod_id, pod_config = f.log_dir_pod()
    log_path, container_id = log_container(f, pod_id, pod_config, "container-with-log-test-", ["echo", DEFAULT_LOG])
    f.start_container(container_id)
    f.wait_state(container_id, cri.CONTAINER_EXITED)
    entries = f.log_entries(pod_config, log_path)
    assert f.log_has(pod_config, log_path, DEFAULT_LOG, "stdout"), f"expected log {DEFAULT_LOG!r} in {entries}"


def test_runtime_should_support_reopening_container_log(f: Framework) -> None:
    pod_id, pod_config = f.log_dir_pod()
    loop = ["sh", "-c", f"while true; do echo {DEFAULT_LOG}; sleep 1; done"]
    log_path, container_id = log_container(f, pod_id, pod_config, "container-reopen-log-test-", loop)
    f.start_container(container_id)
    log_dir = Path(pod_config.log_directory)
    eventually(lambda: f.log_entries(pod_config, log_path), bool, what="container log generated")
    new_log_path = log_path + ".new"
    os.rename(log_dir / log_path, log_dir / new_log_path)
    f.rc.ReopenContainerLog(cri.ReopenContainerLogRequest(container_id=container_id))
    assert (log_dir / log_path).exists(), "new container log file should be created"
    eventually(lambda: f.log_entries(pod_config, log_path), bool, what="new container log generated")
    old_length = len(f.log_entries(pod_config, new_log_path))
    # critest's Consistently(5 s): the renamed file must stop growing.
    for _ in range(5):
        time.sleep(1)
        assert len(f.log_entries(pod_config, new_log_path)) == old_length, "old container log should not change"
