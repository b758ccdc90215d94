"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and ListPodSandbox."""

from __future__ import annotations

import json
from typing import Any

from cri_shim.api import api_pb2 as api
from cri_shim.sandbox import Sandbox, SandboxManager


class SandboxService:
    """Thin handlers over the SandboxManager."""

    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager

    async def RunPodSandbox(self, request: api.RunPodSandboxRequest, context: Any) -> api.RunPodSandboxResponse:
        sandbox_id = await self.manager.run(request.config, request.runtime_handler)
        return api.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def StopPodSandbox(self, request: api.StopPodSandboxRequest, context: Any) -> api.StopPodSandboxResponse:
        await self.manager.stop(request.pod_sandbox_id)
        return api.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: api.RemovePodSandboxRequest, context: Any) -> api.RemovePodSandboxResponse:
        await self.manager.remove(request.pod_sandbox_id)
        return api.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: api.PodSandboxStatusRequest, context: Any) -> api.PodSandboxStatusResponse:
        sb = self.manager.get(request.pod_sandbox_id)
        response = api.PodSandboxStatusResponse(status=sandbox_status(sb))
        if request.verbose:
            response.info["info"] = json.dumps(self.manager.verbose_info(sb))
        return response

    async def ListPodSandbox(self, request: api.ListPodSandboxRequest, context: Any) -> api.ListPodSandboxResponse:
        f = request.filter
        state = f.state.state if f.HasField("state") else None
        items = [_item(sb) for sb in self.manager.select(f.id, dict(f.label_selector), state)]
        return api.ListPodSandboxResponse(items=items)


def sandbox_status(sb: Sandbox) -> api.PodSandboxStatus:
    ips = sb.ips
    return api.PodSandboxStatus(
        id=sb.id,
        metadata=sb.metadata,
        state=sb.state,
        created_at=sb.created_at,
        network=api.PodSandboxNetworkStatus(ip=ips[0] if ips else "", additional_ips=[api.PodIP(ip=ip) for ip in ips[1:]]),
        linux=api.LinuxPodSandboxStatus(namespaces=api.Namespace(options=sb.namespace_options)),
        labels=sb.config.labels,
        annotations=sb.config.annotations,
        runtime_handler=sb.runtime_handler,
    )


def _item(sb: Sandbox) -> api.PodSandbox:
    return api.PodSandbox(
        id=sb.id,
        metadata=sb.metadata,
        state=sb.state,
        created_at=sb.created_at,
        labels=sb.config.labels,
        annotations=sb.config.annotations,
        runtime_handler=sb.runtime_handler,
    )
