"""Containers through the RPCs of a real daemon: configs, the calls tests repeat, and waiting.

    image_id = pull(cri, catalog.ref("busybox"))
    pod = logged_pod(daemon, "web")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("app", "sleep", "600", image=image_id))
    wait_state(cri, cid, api.CONTAINER_EXITED)

Waits poll ContainerStatus until a state is reached or a generous deadline passes: they say
when something never happens, they do not measure how fast it happens.
"""

from __future__ import annotations

import time
from typing import Any

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.pods import pod_config, remove_pod, run_pod, warm_up

WAIT = 60.0
STATE_NAMES = {v: k for k, v in api.ContainerState.items()}


def pull(cri: Cri, image: str) -> str:
    """Pulls image; its id (PullImage's image_ref)."""
    return cri.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=image))).image_ref


def logged_pod(daemon: Daemon, name: str, **fields: Any) -> api.PodSandboxConfig:
    """A pod config whose containers log below the daemon's own directory (as kubelet's
    /var/log/pods/<pod>), outside the state and run dirs that leak snapshots compare."""
    return pod_config(name, log_directory=str(daemon.dir / "logs" / name), **fields)


def container_config(name: str, *command: str, image: str, attempt: int = 0, **fields: Any) -> api.ContainerConfig:
    """A container config running command (the image's when empty), logging to <name>_<attempt>.log."""
    fields.setdefault("log_path", f"{name}_{attempt}.log")
    return api.ContainerConfig(metadata=api.ContainerMetadata(name=name, attempt=attempt), image=api.ImageSpec(image=image),
                               command=list(command), **fields)


def create(cri: Cri, sandbox_id: str, pod: api.PodSandboxConfig, config: api.ContainerConfig) -> str:
    request = api.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)
    return cri.runtime.CreateContainer(request).container_id


def start(cri: Cri, container_id: str) -> None:
    cri.runtime.StartContainer(api.StartContainerRequest(container_id=container_id))


def run_container(cri: Cri, sandbox_id: str, pod: api.PodSandboxConfig, config: api.ContainerConfig) -> str:
    """Creates and starts a container; its id."""
    container_id = create(cri, sandbox_id, pod, config)
    start(cri, container_id)
    return container_id


def stop(cri: Cri, container_id: str, timeout: int = 0) -> None:
    cri.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=timeout))


def remove(cri: Cri, container_id: str) -> None:
    cri.runtime.RemoveContainer(api.RemoveContainerRequest(container_id=container_id))


def status(cri: Cri, container_id: str) -> api.ContainerStatus:
    return cri.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id)).status


def exec_sync(cri: Cri, container_id: str, *argv: str, timeout: int = 0) -> api.ExecSyncResponse:
    return cri.runtime.ExecSync(api.ExecSyncRequest(container_id=container_id, cmd=list(argv), timeout=timeout))


def listed(cri: Cri, **filter_fields: Any) -> list[api.Container]:
    """ListContainers with a filter made of these fields."""
    request = api.ListContainersRequest(filter=api.ContainerFilter(**filter_fields))
    return list(cri.runtime.ListContainers(request).containers)


def wait_state(cri: Cri, container_id: str, state: int, timeout: float = WAIT) -> api.ContainerStatus:
    """The container's status once it is in state; AssertionError (with the last status) if never."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(cri, container_id)
        if st.state == state:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"container {container_id} never became {STATE_NAMES[state]}: {st}")
        time.sleep(0.05)


def warm_up_containers(cri: Cri, daemon: Daemon, image: str) -> None:
    """warm_up (pods), then one pod with one container run and removed, so that what outlives
    containers by design (the directories of records, rootfs, bundles, exit files and runc
    state) exists before a leak snapshot."""
    warm_up(cri)
    pod = logged_pod(daemon, "warmup-containers")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("warmup", "true", image=image))
    wait_state(cri, cid, api.CONTAINER_EXITED)
    remove_pod(cri, sid)
