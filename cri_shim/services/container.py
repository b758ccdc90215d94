"""The container RPCs: lifecycle, status and list, resources, logs, ExecSync and GetContainerEvents."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from cri_shim import metrics
from cri_shim.api import api_pb2 as api
from cri_shim.errors import InvalidArgument
from cri_shim.runtime.events import Event, SandboxChange
from cri_shim.runtime.manager import ContainerManager
from cri_shim.sandbox import SandboxManager
from cri_shim.services.sandbox import sandbox_status
from cri_shim.runtime.record import ContainerRecord


class ContainerService:
    """Thin handlers over the ContainerManager; statuses are built from records in memory."""

    def __init__(self, containers: ContainerManager, sandboxes: SandboxManager) -> None:
        self.containers = containers
        self.sandboxes = sandboxes

    async def CreateContainer(self, request: api.CreateContainerRequest, context: Any) -> api.CreateContainerResponse:
        config = request.config if request.HasField("config") else None
        container_id = await self.containers.create(request.pod_sandbox_id, config)
        return api.CreateContainerResponse(container_id=container_id)

    async def StartContainer(self, request: api.StartContainerRequest, context: Any) -> api.StartContainerResponse:
        await self.containers.start(request.container_id)
        self._observe_pod_start(self.containers.get(request.container_id))
        return api.StartContainerResponse()

    def _observe_pod_start(self, started: ContainerRecord) -> None:
        """The pod's start latency, once: when this is the first of its containers to have started."""
        if any(r.started_at and r.id != started.id for r in self.containers.of_sandbox(started.sandbox_id)):
            return
        sandbox = self.sandboxes.find(started.sandbox_id)
        if sandbox is not None:
            metrics.observe_pod_start(max(0, time.time_ns() - sandbox.created_at) / 1e9)

    async def StopContainer(self, request: api.StopContainerRequest, context: Any) -> api.StopContainerResponse:
        if request.timeout < 0:
            raise InvalidArgument(f"timeout {request.timeout} must not be negative")
        await self.containers.stop(request.container_id, float(request.timeout))
        return api.StopContainerResponse()

    async def RemoveContainer(self, request: api.RemoveContainerRequest, context: Any) -> api.RemoveContainerResponse:
        await self.containers.remove(request.container_id)
        return api.RemoveContainerResponse()

    async def ListContainers(self, request: api.ListContainersRequest, context: Any) -> api.ListContainersResponse:
        f = request.filter
        state = f.state.state if f.HasField("state") else None
        records = self.containers.select(f.id, f.pod_sandbox_id, dict(f.label_selector), state)
        return api.ListContainersResponse(containers=[container_item(r) for r in records])

    async def ContainerStatus(self, request: api.ContainerStatusRequest, context: Any) -> api.ContainerStatusResponse:
        record = self.containers.get(request.container_id)
        response = api.ContainerStatusResponse(status=container_status(record))
        if request.verbose:
            response.info["info"] = json.dumps(self.containers.verbose_info(record))
        return response

    async def UpdateContainerResources(self, request: api.UpdateContainerResourcesRequest,
                                       context: Any) -> api.UpdateContainerResourcesResponse:
        await self.containers.update_resources(request.container_id, request.linux)
        return api.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, request: api.ReopenContainerLogRequest, context: Any) -> api.ReopenContainerLogResponse:
        await self.containers.reopen_log(request.container_id)
        return api.ReopenContainerLogResponse()

    async def ExecSync(self, request: api.ExecSyncRequest, context: Any) -> api.ExecSyncResponse:
        if not request.cmd:
            raise InvalidArgument("cmd must not be empty")
        if request.timeout < 0:
            raise InvalidArgument(f"timeout {request.timeout} must not be negative")
        result = await self.containers.exec_sync(request.container_id, list(request.cmd), request.timeout or None)
        return api.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    async def GetContainerEvents(self, request: api.GetEventsRequest, context: Any) -> AsyncIterator[api.ContainerEventResponse]:
        async for event in self.containers.subscribe():
            yield self._event_response(event)

    def _event_response(self, event: Event) -> api.ContainerEventResponse:
        response = api.ContainerEventResponse(container_event_type=event.type, created_at=event.at)
        if isinstance(event.subject, SandboxChange):  # a sandbox's own event: its id as the container's
            response.container_id = event.subject.sandbox.id
            response.pod_sandbox_status.CopyFrom(sandbox_status(event.subject.sandbox))
            response.containers_statuses.extend(container_status(r) for r in event.subject.containers)
            return response
        record = event.subject
        response.container_id = record.id
        sb = self.sandboxes.find(record.sandbox_id)
        if sb is not None:
            response.pod_sandbox_status.CopyFrom(sandbox_status(sb))
        if event.type != api.CONTAINER_DELETED_EVENT:
            response.containers_statuses.append(container_status(record))
        return response


def _stop_signal(number: int) -> int:
    """The record's signal number as the API's Signal enum (RUNTIME_DEFAULT for unnamed ones)."""
    try:
        return api.Signal.Value(signal.Signals(number).name)
    except ValueError:
        return api.RUNTIME_DEFAULT


def container_item(record: ContainerRecord) -> api.Container:
    """The ListContainers entry of a container."""
    return api.Container(
        id=record.id, pod_sandbox_id=record.sandbox_id, metadata=record.config.metadata,
        image=api.ImageSpec(image=record.image), image_ref=record.image_ref, image_id=record.image_id,
        state=record.state, created_at=record.created_at, labels=record.config.labels,
        annotations=record.config.annotations,
    )


def container_status(record: ContainerRecord) -> api.ContainerStatus:
    """The ContainerStatus of a container: what was asked for, echoed exactly, and what happened since."""
    config = record.config
    status = api.ContainerStatus(
        id=record.id, metadata=config.metadata, state=record.state, created_at=record.created_at,
        started_at=record.started_at, finished_at=record.finished_at, exit_code=record.exit_code,
        image=api.ImageSpec(image=record.image), image_ref=record.image_ref, image_id=record.image_id,
        reason=record.reason, message=record.message, labels=config.labels, annotations=config.annotations,
        mounts=config.mounts, log_path=record.log_path, stop_signal=_stop_signal(record.stop_signal),
    )
    if config.linux.resources.ByteSize():  # none asked for: none reported
        status.resources.linux.CopyFrom(config.linux.resources)
    user = record.user
    if user:
        status.user.linux.CopyFrom(api.LinuxContainerUser(uid=user["uid"], gid=user["gid"],
                                                          supplemental_groups=user["supplemental_groups"]))
    return status
