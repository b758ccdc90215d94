"""A container's log across daemon restarts: the daemon writes on in the log it finds again by
path (without following symlinks), ReopenContainerLog still checks the path, and what containers
write while the daemon is down, or killed, reaches their logs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.crilog import written
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import Pulled, container_config, logged_pod, pulled_daemon, pulling_from, run_container, until

pytestmark = pytest.mark.restart
_ = pulled_daemon  # the `pulled` fixture


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def _logging(pulled: Pulled, pod_name: str, script: str) -> tuple[Path, str, str]:
    """A pod whose container "app" runs script: (the pod's log directory, sandbox id, container id)."""
    pod = logged_pod(pulled.daemon, pod_name)
    sid = run_pod(pulled.cri, pod)
    cid = run_container(pulled.cri, sid, pod, container_config("app", "sh", "-c", script, image=pulled.name))
    return Path(pod.log_directory), sid, cid


def test_reopen_after_a_restart_checks_the_path(pulled: Pulled) -> None:
    d = pulled.daemon
    logs, sid, cid = _logging(pulled, "relog", "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done")
    log = logs / "app_0.log"
    until(lambda: bool(written(log)), "the first log line")
    d.kill()
    d.start()
    cri = Cri(d.endpoint)
    reopen = api.ReopenContainerLogRequest(container_id=cid)

    os.rename(log, logs / "app_0.log.1")
    cri.runtime.ReopenContainerLog(reopen)
    until(lambda: bool(written(log)), "a line in the reopened log")

    logs.rename(logs.with_name("relog.moved"))
    logs.symlink_to(d.dir)
    with pytest.raises(grpc.RpcError) as err:
        cri.runtime.ReopenContainerLog(reopen)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert not (d.dir / "app_0.log").exists()
    logs.unlink()
    logs.with_name("relog.moved").rename(logs)

    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
    cri.close()


def _wait_exited(cri: Cri, cid: str) -> None:
    until(lambda: cri.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status.state
          == api.CONTAINER_EXITED, f"the end of {cid}", timeout=120)


def _numbered(log: Path, stream: str = "stdout") -> list[int]:
    return [int(e.content.split()[1]) for e in written(log) if e.stream == stream and e.content.startswith("line ")]


def test_a_container_writing_through_a_crash_keeps_every_line(pulled: Pulled) -> None:
    """kill -9 while a container writes 20,000 lines (1.5 MB: the pipe fills while the daemon is
    down and the container waits on it), and another exits while the daemon is down: after the
    start, every line is in each log once and in order, and the last unterminated output too."""
    d = pulled.daemon
    cri = pulled.cri
    pod = logged_pod(d, "crash")
    logs = Path(pod.log_directory)
    sid = run_pod(cri, pod)
    n = 20000
    writer = run_container(cri, sid, pod, container_config(
        "writer", "sh", "-c", f"i=0; while [ $i -lt {n} ]; do echo \"line $i of the writer's output\"; i=$((i+1)); "
        "[ $i = 100 ] && sleep 1; done; printf end", image=pulled.name))
    quick = run_container(cri, sid, pod, container_config(
        "quick", "sh", "-c", "sleep 1.5; for i in 0 1 2; do echo line $i; done; printf tail >&2", image=pulled.name))
    until(lambda: len(_numbered(logs / "writer_0.log")) >= 100, "the writer's first lines")
    d.kill()
    time.sleep(3)  # the writer fills its pipe and blocks; quick exits meanwhile
    d.start()
    cri = Cri(d.endpoint)
    _wait_exited(cri, writer)
    _wait_exited(cri, quick)
    assert _numbered(logs / "writer_0.log") == list(range(n))
    assert [(e.partial, e.content) for e in written(logs / "writer_0.log")][-1] == (True, "end")
    quick_log = [(e.stream, e.partial, e.content) for e in written(logs / "quick_0.log")]
    assert quick_log == [("stdout", False, "line 0"), ("stdout", False, "line 1"), ("stdout", False, "line 2"),
                         ("stderr", True, "tail")]
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
    cri.close()


def test_a_log_gone_while_the_daemon_was_down_never_blocks_its_container(pulled: Pulled) -> None:
    """The log directory removed, and a symlink put in its place, while the daemon is down: at the
    start the log cannot be opened again without following it, so the output is dropped, and the
    container, which had filled its pipe meanwhile, writes on to its end."""
    d = pulled.daemon
    logs, sid, cid = _logging(pulled, "gone", "echo first; sleep 1; i=0; while [ $i -lt 20000 ]; do "
                              "echo \"line $i of the output\"; i=$((i+1)); done")
    until(lambda: bool(written(logs / "app_0.log")), "the first line")
    d.kill()
    for entry in logs.iterdir():
        entry.unlink()
    logs.rmdir()
    target = d.dir / "elsewhere"
    target.mkdir()
    logs.symlink_to(target)
    time.sleep(2)
    d.start()
    cri = Cri(d.endpoint)
    _wait_exited(cri, cid)
    assert os.listdir(target) == []
    logs.unlink()
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
    cri.close()
