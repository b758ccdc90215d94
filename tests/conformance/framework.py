"""What critest's pkg/framework does for the specs, on the cri_api client: default pod and
container configs, pulling an image before a create, waiting for a state, and the AfterEach
that stops and removes every sandbox a spec ran.

Nothing here imports cri_shim.api (see conftest.py).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc

from tests.support import crilog
from tests.support.crilog import Entry
from tests.support.standin_images import BUSYBOX, Published
from tests.support.daemon import Daemon

UID_PREFIX = "cri-test-uid"
NAMESPACE_PREFIX = "cri-test-namespace"
ATTEMPT = 2
STOP_TIMEOUT = 60
CALL_TIMEOUT = 300  # critest's -runtime-service-timeout
DEFAULT_COMMAND = ["top"]
PAUSE_COMMAND = ["sh", "-c", "top"]
EVENTUALLY = 60.0  # critest polls states with Eventually(..., time.Minute, ...)

T = TypeVar("T")


def expect_rejected(call: Callable[[], object]) -> grpc.RpcError:
    """critest's Expect(err).To(HaveOccurred()) for a create that must be refused; UNIMPLEMENTED
    is not a refusal of this input, so it is raised on (conftest reports the spec as not run)."""
    try:
        call()
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise
        return exc
    raise AssertionError("the request should have been refused")


def new_uuid() -> str:
    return str(uuid.uuid4())


def eventually(probe: Callable[[], T], accept: Callable[[T], bool], timeout: float = EVENTUALLY, what: str = "") -> T:
    """probe() until accept() holds; the last value otherwise, in the assertion message."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not reached within {timeout}s; last: {value}")
        time.sleep(0.2)


@dataclass
class Clients:
    """The runtime and image services on one channel, as critest builds them for each spec."""

    runtime: cri_grpc.RuntimeServiceStub
    image: cri_grpc.ImageServiceStub

    @classmethod
    def on(cls, channel: grpc.Channel) -> Clients:
        return cls(cri_grpc.RuntimeServiceStub(channel), cri_grpc.ImageServiceStub(channel))


@dataclass
class Framework:
    """One spec's view of the runtime; cleanup() is critest's AfterEach (stop + remove pods)."""

    clients: Clients
    images: Published
    daemon: Daemon
    pods: list[str] = field(default_factory=list)
    temp_dirs: list[Path] = field(default_factory=list)

    @property
    def rc(self) -> cri_grpc.RuntimeServiceStub:
        return self.clients.runtime

    @property
    def ic(self) -> cri_grpc.ImageServiceStub:
        return self.clients.image

    # Sandboxes -------------------------------------------------------------------------------

    def pod_config(self, prefix: str, **fields: object) -> cri.PodSandboxConfig:
        name = prefix + new_uuid()
        metadata = cri.PodSandboxMetadata(name=name, uid=UID_PREFIX + new_uuid(), namespace=NAMESPACE_PREFIX + new_uuid(),
                                          attempt=ATTEMPT)
        config = cri.PodSandboxConfig(metadata=metadata, **fields)
        if not config.HasField("linux"):
            config.linux.SetInParent()
        return config

    def run_pod_sandbox(self, config: cri.PodSandboxConfig) -> str:
        pod_id = self.rc.RunPodSandbox(cri.RunPodSandboxRequest(config=config), timeout=CALL_TIMEOUT).pod_sandbox_id
        assert pod_id
        self.pods.append(pod_id)
        return pod_id

    def run_default_pod_sandbox(self, prefix: str) -> str:
        return self.run_pod_sandbox(self.pod_config(prefix))

    def create_pod_sandbox_for_container(self, **fields: object) -> tuple[str, cri.PodSandboxConfig]:
        config = self.pod_config("PodSandbox-for-create-container-", **fields)
        return self.run_pod_sandbox(config), config

    def security_pod(self, prefix: str, log_dir: bool = False, dns: bool = False,
                     **security: object) -> tuple[str, cri.PodSandboxConfig]:
        """A pod with linux.security_context fields (critest's createPrivilegedPodSandbox,
        createNamespacePodSandbox, seccompTestContainer), optionally logging to a host temp dir."""
        config = self.pod_config(prefix, linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(**security)))
        if dns:
            config.dns_config.SetInParent()
        if log_dir:
            self.add_log_dir(config)
        return self.run_pod_sandbox(config), config

    def add_log_dir(self, config: cri.PodSandboxConfig) -> cri.PodSandboxConfig:
        """critest's createLogTempDir: log_directory = <temp dir>/<pod name>, removed after the spec."""
        host = Path(tempfile.mkdtemp(prefix="podLogTest"))
        self.temp_dirs.append(host)
        (host / config.metadata.name).mkdir(mode=0o777)
        config.log_directory = str(host / config.metadata.name)
        return config

    def pod_status(self, pod_id: str) -> cri.PodSandboxStatus:
        return self.rc.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=CALL_TIMEOUT).status

    def list_pods(self, filt: cri.PodSandboxFilter | None = None) -> list[cri.PodSandbox]:
        return list(self.rc.ListPodSandbox(cri.ListPodSandboxRequest(filter=filt), timeout=CALL_TIMEOUT).items)

    def stop_pod(self, pod_id: str) -> None:
        self.rc.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=CALL_TIMEOUT)

    def remove_pod(self, pod_id: str) -> None:
        self.rc.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=CALL_TIMEOUT)
        if pod_id in self.pods:
            self.pods.remove(pod_id)

    def log_dir_pod(self) -> tuple[str, cri.PodSandboxConfig]:
        """critest's createPodSandboxWithLogDirectory: a pod whose log_directory is a host temp dir."""
        return self.security_pod("PodSandbox-with-log-directory-", log_dir=True)

    # Images ----------------------------------------------------------------------------------

    def pull_public_image(self, name: str, pod_config: cri.PodSandboxConfig | None = None) -> str:
        if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        request = cri.PullImageRequest(image=cri.ImageSpec(image=name), sandbox_config=pod_config)
        ref = self.ic.PullImage(request, timeout=CALL_TIMEOUT).image_ref
        assert ref, f"PullImage({name}) returned an empty image_ref"
        return ref

    def image_status(self, name: str) -> cri.Image | None:
        resp = self.ic.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=name)), timeout=CALL_TIMEOUT)
        return resp.image if resp.HasField("image") else None

    def list_images(self) -> list[cri.Image]:
        return list(self.ic.ListImages(cri.ListImagesRequest(filter=cri.ImageFilter()), timeout=CALL_TIMEOUT).images)

    def remove_image(self, name: str) -> None:
        """critest's removeImage: by ID when the name resolves, nothing otherwise."""
        status = self.image_status(name)
        if status is not None:
            self.ic.RemoveImage(cri.RemoveImageRequest(image=cri.ImageSpec(image=status.id)), timeout=CALL_TIMEOUT)

    # Containers ------------------------------------------------------------------------------

    def container_config(self, prefix: str, image: str = BUSYBOX, command: list[str] | None = None,
                         **fields: object) -> cri.ContainerConfig:
        return cri.ContainerConfig(metadata=cri.ContainerMetadata(name=prefix + new_uuid(), attempt=ATTEMPT),
                                   image=cri.ImageSpec(image=image), command=DEFAULT_COMMAND if command is None else command,
                                   **fields)

    def create_container_with_error(self, config: cri.ContainerConfig, pod_id: str,
                                    pod_config: cri.PodSandboxConfig) -> str:
        """Pulls the image if missing, then CreateContainer; gRPC errors propagate."""
        name = config.image.image
        if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        if self.image_status(name) is None:
            self.pull_public_image(name, pod_config)
        if not config.image.user_specified_image:
            config.image.user_specified_image = name
        request = cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config)
        return self.rc.CreateContainer(request, timeout=CALL_TIMEOUT).container_id

    def create_container(self, config: cri.ContainerConfig, pod_id: str, pod_config: cri.PodSandboxConfig) -> str:
        container_id = self.create_container_with_error(config, pod_id, pod_config)
        assert container_id
        return container_id

    def create_default_container(self, pod_id: str, pod_config: cri.PodSandboxConfig, prefix: str,
                                 labels: dict[str, str] | None = None) -> str:
        return self.create_container(self.container_config(prefix, labels=labels or {}), pod_id, pod_config)

    def create_pause_container(self, pod_id: str, pod_config: cri.PodSandboxConfig, prefix: str) -> str:
        return self.create_container(self.container_config(prefix, command=PAUSE_COMMAND), pod_id, pod_config)

    def start_container(self, container_id: str) -> None:
        self.rc.StartContainer(cri.StartContainerRequest(container_id=container_id), timeout=CALL_TIMEOUT)

    def stop_container(self, container_id: str, timeout: int = STOP_TIMEOUT) -> None:
        self.rc.StopContainer(cri.StopContainerRequest(container_id=container_id, timeout=timeout),
                              timeout=CALL_TIMEOUT + timeout)

    def remove_container(self, container_id: str) -> None:
        self.rc.RemoveContainer(cri.RemoveContainerRequest(container_id=container_id), timeout=CALL_TIMEOUT)

    def container_status(self, container_id: str) -> cri.ContainerStatus:
        request = cri.ContainerStatusRequest(container_id=container_id)
        return self.rc.ContainerStatus(request, timeout=CALL_TIMEOUT).status

    def list_containers(self, filt: cri.ContainerFilter | None = None) -> list[cri.Container]:
        return list(self.rc.ListContainers(cri.ListContainersRequest(filter=filt), timeout=CALL_TIMEOUT).containers)

    def wait_state(self, container_id: str, state: int) -> cri.ContainerStatus:
        return eventually(lambda: self.container_status(container_id), lambda s: s.state == state,
                          what=f"container {container_id} in {cri.ContainerState.Name(state)}")

    def start_and_wait(self, container_id: str) -> None:
        self.start_container(container_id)
        self.wait_state(container_id, cri.CONTAINER_RUNNING)

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 0) -> cri.ExecSyncResponse:
        request = cri.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        return self.rc.ExecSync(request, timeout=CALL_TIMEOUT + timeout)

    def exec_fails(self, container_id: str, cmd: list[str]) -> cri.ExecSyncResponse:
        """ExecSync that critest expects to return an error: cri-client turns a non-zero exit into one."""
        resp = self.exec_sync(container_id, cmd, timeout=30)
        assert resp.exit_code != 0, f"{cmd} should fail: stdout {resp.stdout!r}, stderr {resp.stderr!r}"
        return resp

    def exec_ok(self, container_id: str, cmd: list[str]) -> bytes:
        """ExecSync that must exit 0 (critest's execSyncContainer); returns stdout."""
        resp = self.exec_sync(container_id, cmd, timeout=30)
        assert resp.exit_code == 0, f"{cmd} exited {resp.exit_code}: {resp.stderr!r}"
        assert resp.stderr == b"", "The stderr should be empty."
        return resp.stdout

    def log_entries(self, pod_config: cri.PodSandboxConfig, log_path: str) -> list[Entry]:
        """critest's parseLogLine: every entry of log_directory/log_path (it must exist)."""
        return crilog.parse(Path(pod_config.log_directory) / log_path)

    def log_has(self, pod_config: cri.PodSandboxConfig, log_path: str, line: str, stream: str) -> bool:
        """critest's verifyLogContents: one whole line with this text on this stream."""
        return any(e.content == line and e.stream == stream and not e.partial
                   for e in self.log_entries(pod_config, log_path))

    # AfterEach -------------------------------------------------------------------------------

    def cleanup(self) -> None:
        errors = []
        for pod_id in list(self.pods):
            try:
                self.stop_pod(pod_id)
                self.remove_pod(pod_id)
            except grpc.RpcError as exc:
                errors.append(f"{pod_id}: {exc.code()} {exc.details()}")
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        assert not errors, f"cleanup failed: {errors}"

