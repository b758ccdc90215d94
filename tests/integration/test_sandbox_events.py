"""A sandbox's own events on GetContainerEvents, as containerd sends them and kubelet's evented PLEG
reads them: CREATED and STARTED once RunPodSandbox made it ready, STOPPED when it turns notready
(StopPodSandbox, or its infra process died), DELETED once removed; the container id is the
sandbox's, pod_sandbox_status and containers_statuses are the pod's at the time, and every
subscriber sees them in the one order, among the containers' events.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.pods import changes, remove_pod, run_pod, snapshot, status, stop_pod
from tests.support.registry import Registry
from tests.support.workloads import (
    FOREVER,
    WAIT,
    Pulled,
    container_config,
    logged_pod,
    pulled_daemon,
    pulling_from,
    run_container,
)

pytestmark = pytest.mark.integration

CREATED, STARTED, STOPPED, DELETED = (api.CONTAINER_CREATED_EVENT, api.CONTAINER_STARTED_EVENT,
                                      api.CONTAINER_STOPPED_EVENT, api.CONTAINER_DELETED_EVENT)


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


class Events:
    """One GetContainerEvents stream, read on a thread into a queue."""

    def __init__(self, cri: Cri) -> None:
        self.stream = cri.runtime.GetContainerEvents(api.GetEventsRequest())
        self.queue: queue.Queue[api.ContainerEventResponse] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.queue.put(event)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.CANCELLED, err  # only the test ends the stream

    def until(self, done: Callable[[api.ContainerEventResponse], bool]) -> list[api.ContainerEventResponse]:
        """Every event up to and including the first that done() accepts."""
        seen = []
        while not seen or not done(seen[-1]):
            seen.append(self.queue.get(timeout=WAIT))
        return seen

    def close(self) -> None:
        self.stream.cancel()
        self.reader.join(timeout=10)


def subscribed(cri: Cri, daemon: Any, count: int = 1) -> list[Events]:
    """count streams, each known to be subscribed: a probe pod's events reached every one (the
    server subscribes a stream only once it serves it)."""
    streams = [Events(cri) for _ in range(count)]
    pending = list(streams)
    for attempt in range(20):
        probe = logged_pod(daemon, "probe", attempt=attempt)
        remove_pod(cri, run_pod(cri, probe))
        for stream in list(pending):
            try:
                stream.queue.get(timeout=1)
                pending.remove(stream)
            except queue.Empty:
                continue
        if not pending:
            return streams
    raise AssertionError("an event stream never delivered an event")


def of(events: list[api.ContainerEventResponse], *ids: str) -> list[tuple[str, int]]:
    return [(e.container_id, e.container_event_type) for e in events if e.container_id in ids]


def test_pod_lifecycle_events_in_order_among_its_containers(pulled: Pulled) -> None:
    cri = pulled.cri
    (events,) = subscribed(cri, pulled.daemon)
    try:
        pod = logged_pod(pulled.daemon, "evented")
        sid = run_pod(cri, pod)
        cid = run_container(cri, sid, pod, container_config("app", "sh", "-c", FOREVER, image=pulled.image))
        stop_pod(cri, sid)
        remove_pod(cri, sid)
        seen = events.until(lambda e: e.container_id == sid and e.container_event_type == DELETED)
    finally:
        events.close()
    assert of(seen, sid, cid) == [(sid, CREATED), (sid, STARTED), (cid, CREATED), (cid, STARTED), (cid, STOPPED),
                                  (sid, STOPPED), (cid, DELETED), (sid, DELETED)]
    mine = [e for e in seen if e.container_id in (sid, cid)]
    stamps = [e.created_at for e in mine]
    assert stamps[0] > 0 and stamps == sorted(stamps), stamps  # when each happened, not when the object was made
    pod_events = [e for e in mine if e.container_id == sid]
    for event in pod_events:
        assert event.pod_sandbox_status.id == sid and event.pod_sandbox_status.metadata.name == "evented"
        assert event.pod_sandbox_status.metadata.uid == pod.metadata.uid
    assert [e.pod_sandbox_status.state for e in pod_events] == [
        api.SANDBOX_READY, api.SANDBOX_READY, api.SANDBOX_NOTREADY, api.SANDBOX_NOTREADY]
    # The pod's containers as they were: none yet, the stopped one, none once removed.
    assert [[(s.id, s.state) for s in e.containers_statuses] for e in pod_events] == [
        [], [], [(cid, api.CONTAINER_EXITED)], []]
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_infra_process_death_is_one_stopped_event_for_every_subscriber(pulled: Pulled) -> None:
    cri = pulled.cri
    streams = subscribed(cri, pulled.daemon, count=2)
    try:
        # Its own PID namespace: PID 1 there is the infra process, whose death makes the pod notready.
        ns = api.NamespaceOption(pid=api.POD)
        pod = logged_pod(pulled.daemon, "infra-dies", linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(namespace_options=ns)))
        sid = run_pod(cri, pod)
        _, info = status(cri, sid)
        assert info["pid"] > 0
        os.kill(info["pid"], signal.SIGKILL)
        stopped = [s.until(lambda e: e.container_id == sid and e.container_event_type == STOPPED) for s in streams]
        assert status(cri, sid)[0].state == api.SANDBOX_NOTREADY
        stop_pod(cri, sid)  # already notready: no second STOPPED
        remove_pod(cri, sid)
        seen = [before + s.until(lambda e: e.container_id == sid and e.container_event_type == DELETED)
                for before, s in zip(stopped, streams)]
    finally:
        for s in streams:
            s.close()
    assert of(seen[0], sid) == of(seen[1], sid) == [(sid, CREATED), (sid, STARTED), (sid, STOPPED), (sid, DELETED)]
    for events in seen:
        (event,) = [e for e in events if e.container_id == sid and e.container_event_type == STOPPED]
        assert event.pod_sandbox_status.state == api.SANDBOX_NOTREADY
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}
