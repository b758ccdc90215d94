"""Load: 100 pods made and removed by 10 concurrent clients while List calls keep being answered.

The List latencies are recorded and their p99 printed (speed is the benchmarks' business, so it
is not asserted); every List must succeed and agree with what the clients made, and nothing may
be left behind afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.pods import pod_config, remove_pod, run_pod, snapshot, stop_pod, warm_up

pytestmark = pytest.mark.integration

CLIENTS = 10
PODS_PER_CLIENT = 10
HOST_PORT_BASE = 18300


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Lister:
    """A thread calling the List RPCs in a loop, recording each latency and every sandbox seen."""

    def __init__(self, endpoint: str, calls: dict[str, Callable[[Cri], object]]) -> None:
        self.cri = Cri(endpoint)
        self.calls = calls
        self.latencies: dict[str, list[float]] = {name: [] for name in calls}
        self.seen: dict[str, set[str]] = {}  # sandbox id -> metadata names it was listed with
        self.states: set[int] = set()
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.done.is_set():
            for name, call in self.calls.items():
                started = time.perf_counter()
                try:
                    answer = call(self.cri)
                except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                    self.errors.append(exc)
                    continue
                self.latencies[name].append(time.perf_counter() - started)
                if name == "ListPodSandbox":
                    for item in answer.items:  # type: ignore[attr-defined]
                        self.seen.setdefault(item.id, set()).add(item.metadata.name)
                        self.states.add(item.state)

    def __enter__(self) -> Lister:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=60)
        self.cri.close()


LIST_CALLS: dict[str, Callable[[Cri], object]] = {
    "ListPodSandbox": lambda c: c.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=30),
    "ListImages": lambda c: c.image.ListImages(api.ListImagesRequest(), timeout=30),
}


def test_100_pods_by_10_clients_with_lists_answered_and_nothing_left(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    cri = Cri(daemon.endpoint)
    warm_up(cri)
    before = snapshot(daemon)
    made = threading.Barrier(CLIENTS + 1, timeout=300)
    created: dict[str, str] = {}
    lock = threading.Lock()

    def client(n: int) -> None:
        own = Cri(daemon.endpoint)
        try:
            ids = []
            for i in range(PODS_PER_CLIENT):
                ports = [api.PortMapping(container_port=80, host_port=HOST_PORT_BASE + n)] if i == 0 else []
                sid = run_pod(own, pod_config(f"load-{n}-{i}", port_mappings=ports))
                ids.append(sid)
                with lock:
                    created[sid] = f"load-{n}-{i}"
            made.wait()  # every pod exists at once before any is removed
            made.wait()  # the test has checked the full list
            for sid in ids:
                remove_pod(own, sid)
        except BaseException:
            made.abort()
            raise
        finally:
            own.close()

    started = time.perf_counter()
    with Lister(daemon.endpoint, LIST_CALLS) as lister, ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, n) for n in range(CLIENTS)]
        made.wait()
        listed = cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items
        full = {item.id: (item.metadata.name, item.state) for item in listed}
        made.wait()
        for f in futures:
            f.result(timeout=300)
    elapsed = time.perf_counter() - started

    assert len(created) == CLIENTS * PODS_PER_CLIENT
    assert full == {sid: (name, api.SANDBOX_READY) for sid, name in created.items()}
    assert lister.errors == []
    assert all(lister.latencies.values()), lister.latencies
    # Every sandbox a List showed is one a client made, under the name it was made with.
    assert set(lister.seen) <= set(created) and all(lister.seen[s] == {created[s]} for s in lister.seen)
    assert lister.states <= {api.SANDBOX_READY, api.SANDBOX_NOTREADY}
    assert cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert snapshot(daemon) == before, daemon.log_tail()
    cri.close()
    with capsys.disabled():
        print()
        for name, samples in lister.latencies.items():
            print(f"{name}: {len(samples)} calls under load, p50 {percentile(samples, 0.5) * 1000:.1f} ms,"
                  f" p99 {percentile(samples, 0.99) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms")
        print(f"100 pods made and removed by {CLIENTS} clients in {elapsed:.1f} s")


def test_concurrent_duplicate_calls_agree(daemon: Daemon) -> None:
    """Five clients sending the same RunPodSandbox get one pod; five sending Stop or Remove of
    it all succeed; nothing is left."""
    cri = Cri(daemon.endpoint)
    warm_up(cri)
    before = snapshot(daemon)
    clients = [Cri(daemon.endpoint) for _ in range(5)]
    configs = [pod_config(f"dup{i}") for i in range(4)]
    with ThreadPoolExecutor(len(clients) * len(configs)) as pool:
        ids = list(pool.map(lambda args: run_pod(clients[args[0]], configs[args[1]]),
                            [(c, p) for c in range(len(clients)) for p in range(len(configs))]))
        by_pod = [set(ids[p::len(configs)]) for p in range(len(configs))]
        assert all(len(same) == 1 for same in by_pod), by_pod
        listed = {i.id: i.metadata.name for i in cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items}
        assert listed == {next(iter(same)): c.metadata.name for same, c in zip(by_pod, configs)}
        calls = [(c, sid, c % 2 == 0) for c in range(len(clients)) for sid in listed]
        list(pool.map(lambda a: (stop_pod if a[2] else remove_pod)(clients[a[0]], a[1]), calls))
        list(pool.map(lambda a: remove_pod(clients[a[0]], a[1]), calls))
    assert cri.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert snapshot(daemon) == before, daemon.log_tail()
    for c in [cri, *clients]:
        c.close()
