"""Containers through the RPCs of a real daemon: configs, the calls tests repeat, and waiting.

    image_id = pull(cri, catalog.ref("busybox"))
    pod = logged_pod(daemon, "web")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("app", "sleep", "600", image=image_id))
    wait_state(cri, cid, api.CONTAINER_EXITED)

Waits poll ContainerStatus until a state is reached or a generous deadline passes: they say
when something never happens, they do not measure how fast it happens.

The fixtures here (pulled, runc_wrapper) are used by importing their functions (pulled_daemon,
faulty_runc) into a test module, which also overrides daemon_overrides (tests/conftest.py) so that the daemon may pull from the
session's registry.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import TIME_SCALE, Daemon
from tests.support.faultbin import FaultyBinary
from tests.support.images import Catalog
from tests.support.pods import pod_config, remove_all_pods, remove_pod, run_pod, snapshot, warm_up
from tests.support.registry import Registry
from tests.support.userns import userns

WAIT = 60.0 * TIME_SCALE
STATE_NAMES = {v: k for k, v in api.ContainerState.items()}
# A busybox sh script's tail that keeps the shell running until it is signalled (busybox sh
# execs a last simple command, which would replace the shell and whatever it holds).
FOREVER = "while :; do sleep 0.1; done"


def pulling_from(registry: Registry, **handlers: FaultyBinary) -> dict[str, Any]:
    """daemon_overrides that let the daemon pull from the session's registry, with runtime
    handlers (by name) run through fault wrappers; "runc" named here replaces runc and becomes
    the default handler."""
    overrides: dict[str, Any] = {"images": {"insecure_registries": [registry.host]}}
    if handlers:
        overrides["runtime"] = {"handlers": {name: {"path": str(w.path)} for name, w in handlers.items()}}
        if "runc" in handlers:
            overrides["runtime"]["default_handler"] = "runc"
    return overrides


def until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Polls check until it holds; fails naming what never happened."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened")
        time.sleep(0.05)


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


def userns_pod_config(daemon: Daemon, name: str, host_id: int) -> api.PodSandboxConfig:
    return logged_pod(daemon, name, linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(namespace_options=userns(host_id))))


def userns_container_config(name: str, host_id: int, image: str, **fields: object) -> api.ContainerConfig:
    """A container sleeping an hour in its pod's user namespace."""
    cfg = container_config(name, "sleep", "3600", image=image, **fields)
    cfg.linux.security_context.namespace_options.CopyFrom(userns(host_id))
    return cfg


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


def verbose_info(cri: Cri, container_id: str) -> dict[str, Any]:
    """The verbose ContainerStatus info object (pid, monitor pid, cgroups path, bundle)."""
    answer = cri.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id, verbose=True))
    return json.loads(answer.info["info"])


def exec_sync(cri: Cri, container_id: str, *argv: str, timeout: int = 0) -> api.ExecSyncResponse:
    return cri.runtime.ExecSync(api.ExecSyncRequest(container_id=container_id, cmd=list(argv), timeout=timeout))


def listed(cri: Cri, **filter_fields: Any) -> list[api.Container]:
    """ListContainers with a filter made of these fields."""
    request = api.ListContainersRequest(filter=api.ContainerFilter(**filter_fields))
    return list(cri.runtime.ListContainers(request).containers)


def wait_state(cri: Cri, container_id: str, state: int, timeout: float = WAIT) -> api.ContainerStatus:
    """The container's status once it is in state."""
    until(lambda: status(cri, container_id).state == state, f"container {container_id} becoming {STATE_NAMES[state]}", timeout)
    return status(cri, container_id)


def wait_released(cri: Cri, daemon: Daemon, container_id: str) -> None:
    """Waits for an exited container's exit-time release (cri_shim.runtime.exitrelease): its root
    unmounted and its runtime state deleted, off the RPC path. A leak snapshot taken meanwhile
    would race the unmount."""
    root = Path(daemon.config["paths"]["state_dir"]) / "rootfs" / container_id / "rootfs"
    state = Path(daemon.config["paths"]["run_dir"]) / verbose_info(cri, container_id)["runtimeHandler"] / container_id
    until(lambda: not os.path.ismount(root) and not state.exists(),
          "the exited container's root unmounted and its runtime state deleted")


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


@dataclass
class Pulled:
    """A daemon with busybox pulled and one pod and container run through."""

    daemon: Daemon
    cri: Cri
    image: str  # busybox's id
    name: str  # the name it was pulled by
    before: dict[str, Any]  # the leak snapshot taken then, for tests to end by comparing with


@pytest.fixture(name="pulled")
def pulled_daemon(daemon: Daemon, catalog: Catalog) -> Iterator[Pulled]:
    """The daemon fixture, ready for containers; afterwards the pods a failed test left are removed
    through the runtime (if it still runs), and release_leftovers takes the rest."""
    cri = Cri(daemon.endpoint)
    name = catalog.ref("busybox")
    image = pull(cri, name)
    warm_up_containers(cri, daemon, image)
    try:
        yield Pulled(daemon, cri, image, name, snapshot(daemon))
    finally:
        cri.close()
        if daemon.proc is not None and daemon.proc.poll() is None:
            fresh = Cri(daemon.endpoint)  # the test may have restarted the daemon under the first one
            remove_all_pods(fresh)
            fresh.close()


@pytest.fixture(name="runc_wrapper")
def faulty_runc(tmp_path: Path) -> Iterator[FaultyBinary]:
    """A fault-injecting runc (tests/support/faultbin.py) for daemon_overrides to name; a call it
    left hanging is ended afterwards."""
    wrapper = FaultyBinary(tmp_path, "runc")
    yield wrapper
    wrapper.kill_hung()
