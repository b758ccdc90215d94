"""A container's log after a daemon restart: conmon keeps the directory it was verified in, and
ReopenContainerLog still checks the path again before asking conmon for a new file."""

from __future__ import annotations

import os
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


def test_reopen_after_a_restart_checks_the_path_and_reaches_the_same_monitor(pulled: Pulled) -> None:
    d = pulled.daemon
    cri = pulled.cri
    pod = logged_pod(d, "relog")
    logs = Path(pod.log_directory)
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config(
        "app", "sh", "-c", "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done", image=pulled.name))
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
