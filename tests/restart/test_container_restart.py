"""Containers across daemon restarts, through the RPCs: running ones keep running, exits that
happen while the daemon is down are reported after it comes back, and what a create killed
midway left (a mounted rootfs, a monitor stuck on a hanging runc) is released at the next start."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.faultbin import FaultyBinary
from tests.support.pods import changes, remove_pod, run_pod, snapshot, status as pod_status
from tests.support.registry import Registry
from tests.support.workloads import (
    pulling_from,
    FOREVER,
    WAIT,
    Pulled,
    container_config,
    create,
    exec_sync,
    faulty_runc,
    listed,
    logged_pod,
    pulled_daemon,
    run_container,
    start,
    status,
    stop,
    until,
    verbose_info,
    wait_state,
)

pytestmark = pytest.mark.restart

@pytest.fixture
def daemon_overrides(registry: Registry, runc_wrapper: FaultyBinary) -> dict[str, Any]:
    """Pulls from the session's registry; runc is the fault wrapper (passing calls through until armed)."""
    return pulling_from(registry, runc=runc_wrapper)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a late-reaping init counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait_gone(pid: int, what: str) -> None:
    until(lambda: _gone(pid), f"{what} ({pid}) exiting")


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_running_container_survives_a_restart(pulled: Pulled, how: str) -> None:
    daemon, image, before = pulled.daemon, pulled.image, pulled.before
    cri = pulled.cri
    pod = logged_pod(daemon, "survivor")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("survivor", "sh", "-c", FOREVER, image=image, labels={"k": "v"}))
    st1, info1 = status(cri, cid), verbose_info(cri, cid)
    daemon.kill() if how == "sigkill" else daemon.stop()
    assert not _gone(info1["pid"]) and not _gone(info1["monitorPid"]), "the container and its monitor outlive the daemon"
    daemon.start()
    cri = Cri(daemon.endpoint)
    st2, info2 = status(cri, cid), verbose_info(cri, cid)
    assert st2.state == api.CONTAINER_RUNNING and (st2.created_at, st2.started_at) == (st1.created_at, st1.started_at)
    assert dict(st2.labels) == {"k": "v"} and st2.image_ref == image
    assert (info2["pid"], info2["monitorPid"]) == (info1["pid"], info1["monitorPid"])
    answer = exec_sync(cri, cid, "sh", "-c", "echo alive; exit 4")
    assert (answer.stdout, answer.exit_code) == (b"alive\n", 4)
    assert [c.id for c in listed(cri, state=api.ContainerStateValue(state=api.CONTAINER_RUNNING))] == [cid]
    stop(cri, cid, timeout=10)
    assert (status(cri, cid).state, status(cri, cid).exit_code) == (api.CONTAINER_EXITED, 143)  # TERM, not a restart
    remove_pod(cri, sid)
    assert changes(before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()


def test_exit_while_the_daemon_is_down_is_reported_after_the_restart(pulled: Pulled) -> None:
    daemon, image, before = pulled.daemon, pulled.image, pulled.before
    gate = daemon.dir / "gate"
    gate.mkdir()
    cri = pulled.cri
    pod = logged_pod(daemon, "quitter")
    sid = run_pod(cri, pod)
    mounts = [api.Mount(container_path="/gate", host_path=str(gate))]
    script = "while [ ! -e /gate/go ]; do sleep 0.1; done; exit 7"
    cid = run_container(cri, sid, pod, container_config("quitter", "sh", "-c", script, image=image, mounts=mounts))
    started = status(cri, cid)
    info = verbose_info(cri, cid)
    daemon.kill()
    (gate / "go").touch()
    _wait_gone(info["pid"], "the container")
    _wait_gone(info["monitorPid"], "its monitor")  # it has written the exit file by then
    daemon.start()
    cri = Cri(daemon.endpoint)
    st = status(cri, cid)
    assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 7, "Error")
    assert st.started_at == started.started_at and st.finished_at >= st.started_at
    container_dir = _container_dir(daemon, cid)
    assert not os.path.ismount(container_dir / "rootfs"), "the exit found at start-up unmounts the root"
    assert (container_dir / "upper").is_dir(), "the writable layer stays until RemoveContainer"
    assert pod_status(cri, sid)[0].state == api.SANDBOX_READY
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(cri, cid, "true")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    remove_pod(cri, sid)
    assert changes(before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()


def _container_dir(daemon: Daemon, cid: str) -> Path:
    return Path(daemon.config["paths"]["state_dir"]) / "rootfs" / cid


def _overlay_options(target: Path) -> str:
    """The options the overlay mounted at target was made with (its superblock's, as mounted)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(target):
            return fields[fields.index("-", 6) + 3]
    raise AssertionError(f"nothing is mounted at {target}")


def test_unmount_cut_short_by_a_crash_is_done_at_the_next_start(pulled: Pulled) -> None:
    """kill -9 after the exit is recorded and before the root is unmounted (the overlay mounted
    again by hand stands for that state): the next start unmounts it, keeps what the container
    wrote until RemoveContainer, and removing the pod leaves nothing."""
    daemon, image, before = pulled.daemon, pulled.image, pulled.before
    cri = pulled.cri
    pod = logged_pod(daemon, "cut-short")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("cut-short", "sh", "-c", f"echo kept > /written; {FOREVER}",
                                                        image=image))
    target = _container_dir(daemon, cid) / "rootfs"
    until(lambda: (target.parent / "upper" / "written").exists(), "the container writing")
    options = _overlay_options(target)
    stop(cri, cid)
    until(lambda: not os.path.ismount(target), "the root unmounted at the exit")
    daemon.kill()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True)
    assert os.path.ismount(target)
    daemon.start()
    cri = Cri(daemon.endpoint)
    assert status(cri, cid).state == api.CONTAINER_EXITED
    assert not os.path.ismount(target), "start-up unmounts the roots of exited containers"
    assert (target.parent / "upper" / "written").read_text() == "kept\n"
    remove_pod(cri, sid)
    assert not target.parent.exists()
    assert changes(before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()


def test_create_killed_midway_is_released_at_the_next_start(pulled: Pulled,
                                                            runc_wrapper: FaultyBinary) -> None:
    """kill -9 while `runc create` hangs: the record says the create never finished, the rootfs is
    mounted, conmon waits on the hung call. The next start kills both and releases the rootfs."""
    daemon, image, before = pulled.daemon, pulled.image, pulled.before
    cri = pulled.cri
    pod = logged_pod(daemon, "interrupted")
    sid = run_pod(cri, pod)
    with_pod = snapshot(daemon)
    config = container_config("interrupted", "sleep", "600", image=image)
    runc_wrapper.inject("create", "hang")
    call = cri.runtime.CreateContainer.future(api.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod))
    hung = runc_wrapper.wait_hung()
    rootfs = Path(daemon.config["paths"]["state_dir"]) / "rootfs"
    mounted = [m for m in changes(with_pod, snapshot(daemon)).get("mounts", {}).get("added", []) if m.endswith(" overlay")]
    assert [Path(m.split()[0]).parent.parent for m in mounted] == [rootfs], "the rootfs is mounted before runc create"
    daemon.kill()
    with pytest.raises(grpc.RpcError):
        call.result(timeout=WAIT)
    assert not _gone(hung), "the hung runc call outlives the daemon"
    runc_wrapper.clear()
    daemon.start()
    cri = Cri(daemon.endpoint)
    _wait_gone(hung, "the hung runc call")
    assert listed(cri) == []
    assert changes(with_pod, snapshot(daemon)) == {}, daemon.log_tail()
    assert os.listdir(rootfs) == []
    # kubelet retries the create it got no answer for: the name is free, the create works.
    cid = create(cri, sid, pod, config)
    start(cri, cid)
    assert wait_state(cri, cid, api.CONTAINER_RUNNING).image_ref == image
    remove_pod(cri, sid)
    assert changes(before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()


def test_created_container_starts_after_a_restart(pulled: Pulled) -> None:
    """A container created before kill -9 (runc's init waiting for the start) is still CREATED
    after the restart, and StartContainer then runs it, with its exit recorded as usual."""
    daemon, image, before = pulled.daemon, pulled.image, pulled.before
    cri = pulled.cri
    pod = logged_pod(daemon, "waiting")
    sid = run_pod(cri, pod)
    cid = create(cri, sid, pod, container_config("waiting", "sh", "-c", "exit 9", image=image))
    daemon.kill()
    daemon.start()
    cri = Cri(daemon.endpoint)
    assert status(cri, cid).state == api.CONTAINER_CREATED
    start(cri, cid)
    st = wait_state(cri, cid, api.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (9, "Error") and st.started_at > 0
    remove_pod(cri, sid)
    assert changes(before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()


def _to_earlier_form(path: Path) -> None:
    """Rewrites a container record as the version before the whole config was kept wrote it: a
    dozen config fields of its own, no config."""
    data = json.loads(path.read_text())
    record = data["record"]
    config = api.ContainerConfig.FromString(base64.b64decode(record.pop("config")))

    def as_dict(message: Any) -> dict[str, Any]:  # as that version wrote them
        return json_format.MessageToDict(message, preserving_proto_field_name=True)

    record.update(metadata_name=config.metadata.name, attempt=config.metadata.attempt, labels=dict(config.labels),
                  annotations=dict(config.annotations), mounts=[as_dict(m) for m in config.mounts],
                  resources=as_dict(config.linux.resources), stdin=config.stdin, stdin_once=config.stdin_once,
                  tty=config.tty)
    path.write_text(json.dumps(data))


def test_records_of_the_earlier_form_load_after_an_upgrade(pulled: Pulled) -> None:
    """An operator upgrades with containers running: their records, of the earlier form, load;
    each container's status is what it was, and its record is written back in the current form."""
    daemon, image, before = pulled.daemon, pulled.image, pulled.before
    cri = pulled.cri
    pod = logged_pod(daemon, "upgraded")
    sid = run_pod(cri, pod)
    shared = daemon.dir / "shared"
    shared.mkdir()
    config = container_config("upgraded", "sh", "-c", FOREVER, image=image, labels={"k": "v"}, annotations={"a": "b"},
                              mounts=[api.Mount(container_path="/shared", host_path=str(shared), readonly=True)],
                              stdin=True)
    config.linux.resources.memory_limit_in_bytes = 64 * 1024 * 1024
    cid = run_container(cri, sid, pod, config)
    st1 = status(cri, cid)
    daemon.kill()
    path = Path(daemon.config["paths"]["state_dir"]) / "containers" / f"{cid}.json"
    _to_earlier_form(path)
    daemon.start()
    cri = Cri(daemon.endpoint)
    st2 = status(cri, cid)
    assert st2 == st1, daemon.log_tail()
    assert "config" in json.loads(path.read_text())["record"]
    answer = exec_sync(cri, cid, "sh", "-c", "echo alive")
    assert answer.stdout == b"alive\n"
    stop(cri, cid, timeout=10)
    remove_pod(cri, sid)
    shared.rmdir()
    assert changes(before, snapshot(daemon)) == {}, daemon.log_tail()
    cri.close()
