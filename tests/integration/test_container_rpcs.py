"""The container RPCs on a real daemon: busybox pulled from a real registry, real pods, runc and conmon.

Each test gets its own daemon (the pulled fixture): the image pulled, one pod and one container
run through (so the directories that outlive containers exist), and the leak snapshot it ends
by comparing with.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri_shim.cgroups import stats as cgroup_stats
from tests.support.client import Cri, api
from tests.support.pods import changes, remove_pod, run_pod, snapshot, stop_pod
from tests.support.registry import Registry
from tests.support.workloads import (
    pulling_from,
    FOREVER,
    WAIT,
    Pulled,
    container_config,
    create,
    exec_sync,
    listed,
    logged_pod,
    pull,
    pulled_daemon,
    remove,
    run_container,
    start,
    status,
    stop,
    until,
    verbose_info,
    wait_released,
    wait_state,
)

pytestmark = pytest.mark.integration

# Runs until stopped; "ready" once its TERM disposition is in place, so a stop never races the trap.
HONOURS_TERM = f"trap 'exit 42' TERM; touch /tmp/ready; {FOREVER}"
IGNORES_TERM = f"trap '' TERM; touch /tmp/ready; {FOREVER}"


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def sh(name: str, script: str, image: str, **fields: Any) -> api.ContainerConfig:
    return container_config(name, "sh", "-c", script, image=image, **fields)


def ready(cri: Cri, container_id: str) -> None:
    """Waits for a container script's /tmp/ready."""
    until(lambda: exec_sync(cri, container_id, "test", "-e", "/tmp/ready").exit_code == 0, f"{container_id} ready")


def not_found(call: Callable[[], object]) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()


def test_lifecycle_and_status_fields(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    volume = d.dir / "volume"
    volume.mkdir()
    (volume / "file").write_text("from the host\n")
    mounts = [api.Mount(container_path="/vol", host_path=str(volume), readonly=True,
                        propagation=api.PROPAGATION_PRIVATE)]
    labels, annotations = {"app": "life", "io.kubernetes.container.name": "main"}, {"note": "x" * 300}
    pod = logged_pod(d, "life")
    sid = run_pod(cri, pod)
    config = sh("main", "echo started; sleep 600", pulled.name, labels=labels, annotations=annotations, mounts=mounts)
    cid = create(cri, sid, pod, config)

    st = status(cri, cid)
    assert (st.id, st.state, st.metadata.name, st.metadata.attempt) == (cid, api.CONTAINER_CREATED, "main", 0)
    assert st.created_at > 0 and st.started_at == 0 and st.finished_at == 0
    assert dict(st.labels) == labels and dict(st.annotations) == annotations
    assert list(st.mounts) == mounts
    assert st.log_path == os.path.join(pod.log_directory, "main_0.log") and os.path.isabs(st.log_path)
    assert st.image.image == pulled.name and st.image_ref == st.image_id == pulled.image
    [item] = listed(cri, id=cid)
    assert (item.pod_sandbox_id, item.image_ref, item.image_id, item.image.image) == (sid, pulled.image, pulled.image, pulled.name)
    image = cri.image.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=pulled.name))).image
    assert image.id == pulled.image

    start(cri, cid)
    st = status(cri, cid)
    assert st.state == api.CONTAINER_RUNNING and st.started_at >= st.created_at and st.finished_at == 0
    assert Path(st.log_path).is_file()  # kubelet links it right after StartContainer
    assert exec_sync(cri, cid, "cat", "/vol/file").stdout == b"from the host\n"
    assert exec_sync(cri, cid, "sh", "-c", "echo > /vol/file").exit_code != 0  # read-only, as asked

    remove(cri, cid)  # running: killed, then removed
    assert listed(cri) == []
    not_found(lambda: status(cri, cid))
    remove(cri, cid)
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_created_by_image_id_names_a_tag(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "byid")
    sid = run_pod(cri, pod)
    cid = create(cri, sid, pod, container_config("byid", "true", image=pulled.image))
    st = status(cri, cid)
    assert st.image.image == pulled.name and st.image_ref == st.image_id == pulled.image
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


@pytest.mark.parametrize("code,reason", [(3, "Error"), (0, "Completed")])
def test_container_exiting_by_itself(pulled: Pulled, code: int, reason: str) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "exits")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, sh("exits", f"exit {code}", pulled.image))
    st = wait_state(cri, cid, api.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (code, reason)
    assert st.finished_at >= st.started_at > 0
    [item] = listed(cri, id=cid)
    assert item.state == api.CONTAINER_EXITED
    remove(cri, cid)
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_stop_honours_sigterm_and_kills_after_the_timeout(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "stops")
    sid = run_pod(cri, pod)
    honours = run_container(cri, sid, pod, sh("honours", HONOURS_TERM, pulled.image))
    ignores = run_container(cri, sid, pod, sh("ignores", IGNORES_TERM, pulled.image))
    never_started = create(cri, sid, pod, container_config("idle", "true", image=pulled.image))
    for cid in (honours, ignores):
        ready(cri, cid)

    stop(cri, honours, timeout=60)
    st = status(cri, honours)
    assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 42, "Error"), "the TERM handler ran"

    asked = time.time_ns()
    stop(cri, ignores, timeout=2)
    st = status(cri, ignores)
    assert (st.state, st.exit_code) == (api.CONTAINER_EXITED, 137), "killed by SIGKILL"
    # Exit file times are coarse (a jiffy): allow that much before the grace period's end.
    assert st.finished_at - asked >= 2 * 10**9 - 50 * 10**6, "SIGKILL only after the timeout"

    stop(cri, never_started, timeout=10)  # created, never started: nothing to stop
    assert status(cri, never_started).state == api.CONTAINER_CREATED
    stop(cri, honours, timeout=10)  # already stopped
    stop(cri, "f" * 64)  # unknown
    assert status(cri, honours).exit_code == 42
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_list_filters(pulled: Pulled) -> None:
    cri = pulled.cri
    pod_a, pod_b = logged_pod(pulled.daemon, "a"), logged_pod(pulled.daemon, "b")
    a, b = run_pod(cri, pod_a), run_pod(cri, pod_b)
    web = run_container(cri, a, pod_a, container_config("web", "sleep", "600", image=pulled.image, labels={"app": "x", "tier": "web"}))
    db = create(cri, a, pod_a, container_config("db", "sleep", "600", image=pulled.image, labels={"app": "x", "tier": "db"}))
    job = run_container(cri, b, pod_b, container_config("job", "true", image=pulled.image, labels={"app": "y"}))
    wait_state(cri, job, api.CONTAINER_EXITED)

    def ids(**f: Any) -> set[str]:
        return {c.id for c in listed(cri, **f)}

    def state(s: int) -> api.ContainerStateValue:
        return api.ContainerStateValue(state=s)

    assert ids() == {web, db, job}
    assert ids(id=web) == {web} and ids(id=db[:12]) == {db} and ids(id="nope") == set()
    assert ids(state=state(api.CONTAINER_RUNNING)) == {web}
    assert ids(state=state(api.CONTAINER_CREATED)) == {db}
    assert ids(state=state(api.CONTAINER_EXITED)) == {job}
    assert ids(pod_sandbox_id=a) == {web, db} and ids(pod_sandbox_id=b[:12]) == {job}
    assert ids(pod_sandbox_id="f" * 64) == set()
    assert ids(label_selector={"app": "x"}) == {web, db}
    assert ids(label_selector={"app": "x", "tier": "db"}) == {db}
    assert ids(label_selector={"app": "z"}) == set()
    assert ids(id=web, pod_sandbox_id=b) == set() and ids(id=web, state=state(api.CONTAINER_EXITED)) == set()
    assert ids(pod_sandbox_id=a, state=state(api.CONTAINER_RUNNING), label_selector={"tier": "web"}) == {web}
    for sid in (a, b):
        remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_retried_create_returns_the_same_container(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "retry")
    sid = run_pod(cri, pod)
    config = container_config("retried", "sleep", "600", image=pulled.image)
    with ThreadPoolExecutor(4) as pool:
        concurrent = set(pool.map(lambda _: create(cri, sid, pod, config), range(4)))
    assert len(concurrent) == 1
    [cid] = concurrent
    assert create(cri, sid, pod, config) == cid
    assert [c.id for c in listed(cri)] == [cid]
    next_attempt = create(cri, sid, pod, container_config("retried", "sleep", "600", image=pulled.image, attempt=1))
    assert next_attempt != cid and {c.id for c in listed(cri)} == {cid, next_attempt}
    remove(cri, cid)
    assert create(cri, sid, pod, config) != cid, "a removed container's name is free again"
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_stop_and_remove_pod_take_its_containers(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "owner")
    sid = run_pod(cri, pod)
    other_pod = logged_pod(pulled.daemon, "bystander")
    other = run_pod(cri, other_pod)
    bystander = run_container(cri, other, other_pod, container_config("bystander", "sleep", "600", image=pulled.image))
    # One honouring TERM and one ignoring it: StopPodSandbox gives no grace to either.
    ids = [run_container(cri, sid, pod, sh(name, script, pulled.image))
           for name, script in (("honours", HONOURS_TERM), ("ignores", IGNORES_TERM))]
    for cid in ids:
        ready(cri, cid)

    stop_pod(cri, sid)
    for cid in ids:
        st = status(cri, cid)
        assert (st.state, st.exit_code) == (api.CONTAINER_EXITED, 137), st
    assert {c.id: c.state for c in listed(cri, pod_sandbox_id=sid)} == {cid: api.CONTAINER_EXITED for cid in ids}
    assert status(cri, bystander).state == api.CONTAINER_RUNNING

    remove_pod(cri, sid)
    assert [c.id for c in listed(cri)] == [bystander]
    for cid in ids:
        not_found(lambda: status(cri, cid))
    remove_pod(cri, other)
    assert listed(cri) == []
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_remove_pod_with_running_and_created_containers(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "busy")
    sid = run_pod(cri, pod)
    run_container(cri, sid, pod, container_config("running", "sleep", "600", image=pulled.image))
    create(cri, sid, pod, container_config("created", "sleep", "600", image=pulled.image))
    remove_pod(cri, sid)  # without a stop first
    assert listed(cri) == []
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def _container_dir(pulled: Pulled, cid: str) -> Path:
    return Path(pulled.daemon.config["paths"]["state_dir"]) / "rootfs" / cid


def test_no_leaks_after_20_cycles(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "cycles")
    sid = run_pod(cri, pod)
    with_pod = snapshot(pulled.daemon)
    for attempt in range(20):
        cid = run_container(cri, sid, pod, container_config("cycle", "sleep", "600", image=pulled.image, attempt=attempt))
        if attempt % 2:
            # Then an exited container is removed, right after the exit: what its exit releases
            # may be under way, done or not begun yet.
            stop(cri, cid, timeout=5 if attempt % 4 == 1 else 0)
        else:
            assert exec_sync(cri, cid, "true").exit_code == 0  # then a running one
        remove(cri, cid)
        assert not _container_dir(pulled, cid).exists()
    assert changes(with_pod, snapshot(pulled.daemon)) == {}
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_exited_container_keeps_its_writable_layer_not_its_mount(pulled: Pulled) -> None:
    """At a container's exit, off the RPC path, its overlay root is unmounted and the runtime's
    state and cgroup are deleted; what it wrote stays (status, log, bundle, writable layer) until
    RemoveContainer, which leaves nothing."""
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "exited-root")
    sid = run_pod(cri, pod)
    with_pod = snapshot(d)
    script = "echo kept > /written; echo said; while [ ! -e /go ]; do sleep 0.1; done"
    cid = run_container(cri, sid, pod, sh("writer", script, pulled.image))
    container_dir = _container_dir(pulled, cid)
    runtime_state = Path(d.config["paths"]["run_dir"]) / verbose_info(cri, cid)["runtimeHandler"] / cid
    assert runtime_state.is_dir() and os.path.ismount(container_dir / "rootfs")
    assert exec_sync(cri, cid, "touch", "/go").exit_code == 0
    assert wait_state(cri, cid, api.CONTAINER_EXITED).exit_code == 0
    wait_released(cri, d, cid)
    assert (container_dir / "upper" / "written").read_text() == "kept\n"
    st = status(cri, cid)
    assert st.reason == "Completed" and b"said" in Path(st.log_path).read_bytes()
    assert set(changes(with_pod, snapshot(d))) == {"state files", "run files"}, "no mount, cgroup or process left"
    remove(cri, cid)
    assert not container_dir.exists()
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_container_events(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "events")
    sid = run_pod(cri, pod)
    events: queue.Queue[api.ContainerEventResponse] = queue.Queue()
    stream = cri.runtime.GetContainerEvents(api.GetEventsRequest())

    def read() -> None:
        try:
            for event in stream:
                events.put(event)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.CANCELLED, err  # only the test ends the stream

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # The stream sees events published after the server subscribed it; a probe container's
        # tell when (the probes' own events are left out below).
        for attempt in range(20):
            remove(cri, create(cri, sid, pod, container_config("probe", "true", image=pulled.image, attempt=attempt)))
            try:
                events.get(timeout=1)
                break
            except queue.Empty:
                continue
        else:
            raise AssertionError("the event stream never delivered an event")

        cid = run_container(cri, sid, pod, sh("watched", "exit 5", pulled.image))
        wait_state(cri, cid, api.CONTAINER_EXITED)
        remove(cri, cid)
        seen: list[api.ContainerEventResponse] = []
        while not any(e.container_event_type == api.CONTAINER_DELETED_EVENT for e in seen):
            event = events.get(timeout=WAIT)
            if event.container_id == cid:
                seen.append(event)
    finally:
        stream.cancel()
        reader.join(timeout=10)
    assert [e.container_event_type for e in seen] == [
        api.CONTAINER_CREATED_EVENT, api.CONTAINER_STARTED_EVENT, api.CONTAINER_STOPPED_EVENT, api.CONTAINER_DELETED_EVENT]
    assert all(e.created_at > 0 for e in seen)
    for event in seen:
        assert event.pod_sandbox_status.id == sid and event.pod_sandbox_status.state == api.SANDBOX_READY
        assert event.pod_sandbox_status.metadata.name == "events"
    states = [[s.state for s in e.containers_statuses] for e in seen]
    assert states == [[api.CONTAINER_CREATED], [api.CONTAINER_RUNNING], [api.CONTAINER_EXITED], []]
    assert seen[2].containers_statuses[0].exit_code == 5
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def _container_stats(cri: Cri, cid: str) -> api.ContainerStats:
    return cri.runtime.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats


def test_container_stats(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "stats")
    sid = run_pod(cri, pod)
    allocated = 48 * 1024 * 1024
    # The loop keeps the shell (and its variable) alive: busybox sh execs a last simple command.
    hog = run_container(cri, sid, pod, sh("hog", f"x=$(head -c {allocated} /dev/zero | tr '\\0' a); touch /tmp/ready; {FOREVER}",
                                          pulled.image, labels={"role": "hog"}))
    spin = run_container(cri, sid, pod, sh("spin", "while :; do :; done", pulled.image, labels={"role": "spin"}))
    idle = create(cri, sid, pod, container_config("idle", "true", image=pulled.image))
    ready(cri, hog)

    mem = _container_stats(cri, hog)
    assert (mem.attributes.id, mem.attributes.metadata.name, dict(mem.attributes.labels)) == (hog, "hog", {"role": "hog"})
    assert mem.memory.timestamp > 0 and mem.memory.working_set_bytes.value > allocated, mem.memory

    first = _container_stats(cri, spin)
    assert first.cpu.timestamp > 0
    until(lambda: _container_stats(cri, spin).cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value,
          "CPU usage growing while the container spins")
    # A rate between two samples: 0 when the counter did not move between two close calls.
    until(lambda: _container_stats(cri, spin).cpu.usage_nano_cores.value > 0, "a CPU rate above zero while it spins")

    layer = _container_stats(cri, hog).writable_layer
    assert layer.timestamp > 0 and layer.fs_id.mountpoint
    written = 8 * 1024 * 1024
    assert exec_sync(cri, hog, "dd", "if=/dev/zero", "of=/written", "bs=1048576", "count=8").exit_code == 0
    grown = _container_stats(cri, hog).writable_layer
    assert grown.used_bytes.value >= layer.used_bytes.value + written
    assert grown.inodes_used.value > layer.inodes_used.value

    def listed_stats(**f: Any) -> set[str]:
        request = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(**f))
        return {s.attributes.id for s in cri.runtime.ListContainerStats(request).stats}

    assert {s.attributes.id for s in cri.runtime.ListContainerStats(api.ListContainerStatsRequest()).stats} == {hog, spin}
    assert listed_stats(id=spin) == {spin} and listed_stats(id=idle) == {idle}
    assert listed_stats(pod_sandbox_id=sid) == {hog, spin}
    assert listed_stats(label_selector={"role": "hog"}) == {hog} and listed_stats(label_selector={"role": "none"}) == set()
    not_found(lambda: _container_stats(cri, "f" * 64))
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_pod_stats_with_network(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "netstats", labels={"net": "cni"})
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("app", "sleep", "600", image=pulled.image))

    def check(stats: api.PodSandboxStats) -> None:
        assert stats.attributes.id == sid and stats.attributes.metadata.name == "netstats"
        network = stats.linux.network
        assert network.timestamp > 0 and "eth0" in [i.name for i in network.interfaces], network
        assert network.default_interface.name == "eth0"
        assert [c.attributes.id for c in stats.linux.containers] == [cid]
        assert stats.linux.process.process_count.value >= 1

    check(cri.runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats)
    [listed_stats] = cri.runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest()).stats
    check(listed_stats)
    by_label = api.ListPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter(label_selector={"net": "cni"}))
    assert [s.attributes.id for s in cri.runtime.ListPodSandboxStats(by_label).stats] == [sid]
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_image_removed_while_its_container_runs(pulled: Pulled) -> None:
    """RemoveImage is allowed while containers use the image: the container keeps its rootfs, and
    the layers go when the last container using them is removed."""
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "orphaned-image")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("user", "sleep", "600", image=pulled.image))
    cri.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=pulled.image)))
    assert cri.image.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=pulled.image))).image.id == ""
    assert exec_sync(cri, cid, "cat", "/etc/hostname").exit_code == 0
    remove_pod(cri, sid)
    assert cri.image.ListImages(api.ListImagesRequest()).images == []
    diff = changes(pulled.before, snapshot(pulled.daemon))
    assert set(diff) == {"state files"} and diff["state files"]["added"] == [], diff
    assert all(p.startswith("images/") for p in diff["state files"]["gone"]), "only the image's files are gone"
    assert pull(cri, pulled.name) == pulled.image
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_pod_with_a_cgroup_parent(pulled: Pulled) -> None:
    """kubelet gives every pod a cgroup of its own: pod stats come from it, and nothing of it is
    left once the pod is removed."""
    cri = pulled.cri
    parent = f"{pulled.daemon.config['runtime']['default_cgroup_parent']}/kubepods/pod-cg"
    pod = logged_pod(pulled.daemon, "cgroup", linux=api.LinuxPodSandboxConfig(cgroup_parent=parent))
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, sh("spin", "while :; do :; done", pulled.image))
    assert verbose_info(cri, cid)["cgroupsPath"].startswith(parent + "/")

    def pod_cpu() -> int:
        stats = cri.runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats
        return stats.linux.cpu.usage_core_nano_seconds.value

    first = pod_cpu()
    until(lambda: pod_cpu() > first, "the pod's CPU usage growing while its container spins")
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_create_in_a_stopped_pod_is_refused(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "stopped")
    sid = run_pod(cri, pod)
    stop_pod(cri, sid)
    with pytest.raises(grpc.RpcError) as err:
        create(cri, sid, pod, container_config("late", "true", image=pulled.image))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert listed(cri) == []
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_update_resources_applies_and_is_reported(pulled: Pulled) -> None:
    cri = pulled.cri
    pod = logged_pod(pulled.daemon, "resize")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("resized", "sleep", "600", image=pulled.image))
    resources = api.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=64 * 1024 * 1024, cpu_quota=50000, cpu_period=100000)
    cri.runtime.UpdateContainerResources(api.UpdateContainerResourcesRequest(container_id=cid, linux=resources))
    reported = status(cri, cid).resources.linux
    assert (reported.cpu_shares, reported.memory_limit_in_bytes, reported.cpu_quota) == (256, 64 * 1024 * 1024, 50000)
    applied = cgroup_stats.read(verbose_info(cri, cid)["cgroupsPath"])
    assert applied is not None and applied.memory_limit_bytes == 64 * 1024 * 1024, "runc update reached the cgroup"
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_concurrent_cycles_in_two_pods_leave_nothing(pulled: Pulled) -> None:
    """Eight clients at once, each creating, starting, exec'ing into and removing its own
    containers in one of two pods: every step answers, and nothing is left."""
    cri = pulled.cri
    pods = [logged_pod(pulled.daemon, f"busy{n}") for n in range(2)]
    sids = [run_pod(cri, pod) for pod in pods]
    with_pods = snapshot(pulled.daemon)

    def client(n: int) -> list[int]:
        own = Cri(pulled.daemon.endpoint)
        codes = []
        try:
            for attempt in range(4):
                config = container_config(f"worker{n}", "sleep", "600", image=pulled.image, attempt=attempt)
                cid = run_container(own, sids[n % 2], pods[n % 2], config)
                codes.append(exec_sync(own, cid, "sh", "-c", f"exit {n}").exit_code)
                if attempt % 2:
                    stop(own, cid, timeout=5)
                remove(own, cid)
        finally:
            own.close()
        return codes

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    assert results == [[n] * 4 for n in range(8)]
    assert listed(cri) == []
    assert changes(with_pods, snapshot(pulled.daemon)) == {}
    for sid in sids:
        remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}
