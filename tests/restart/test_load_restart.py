"""kill -9 in the middle of a load: 10 clients making pods when the daemon dies. After the restart
no acknowledged pod is lost, nothing half-made is listed, a retry of every interrupted attempt
gets a ready pod, and once all are removed nothing is left behind."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.pods import pod_config, remove_pod, run_pod, snapshot, status, warm_up

pytestmark = pytest.mark.restart

CLIENTS = 10
PODS_PER_CLIENT = 10
KILL_AFTER = 40


def test_kill_9_under_load_loses_no_acknowledged_pod(daemon: Daemon) -> None:
    cri = Cri(daemon.endpoint)
    warm_up(cri)
    before = snapshot(daemon)
    cri.close()
    acknowledged: dict[str, str] = {}  # pod name -> id
    interrupted: list[str] = []  # names whose RunPodSandbox got no answer
    lock = threading.Lock()

    def client(n: int) -> None:
        own = Cri(daemon.endpoint)
        try:
            for i in range(PODS_PER_CLIENT):
                name = f"load-{n}-{i}"
                try:
                    sid = run_pod(own, pod_config(name))
                except grpc.RpcError:
                    with lock:
                        interrupted.append(name)
                    return
                with lock:
                    acknowledged[name] = sid
        finally:
            own.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, n) for n in range(CLIENTS)]
        deadline = time.monotonic() + 120
        while len(acknowledged) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.01)
        daemon.kill()
        for f in futures:
            f.result(timeout=60)
    assert len(acknowledged) >= KILL_AFTER and interrupted, (len(acknowledged), interrupted)

    daemon.start()
    cri = Cri(daemon.endpoint)
    listed = {i.metadata.name: (i.id, i.state) for i in cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items}
    for name, sid in acknowledged.items():
        assert listed.get(name) == (sid, api.SANDBOX_READY), name
    # Beyond those, only interrupted attempts that had finished before the kill, all ready.
    extra = {name: v for name, v in listed.items() if name not in acknowledged}
    assert set(extra) <= set(interrupted) and all(state == api.SANDBOX_READY for _, state in extra.values())
    # kubelet retries an attempt it got no answer for: it gets the finished pod, or a new one.
    for name in interrupted:
        sid = run_pod(cri, pod_config(name))
        assert name not in extra or sid == extra[name][0]
        assert status(cri, sid)[0].state == api.SANDBOX_READY
        acknowledged[name] = sid
    assert len(cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items) == len(acknowledged)
    for sid in acknowledged.values():
        remove_pod(cri, sid)
    assert snapshot(daemon) == before, daemon.log_tail()
    cri.close()
