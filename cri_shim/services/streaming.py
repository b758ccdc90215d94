"""Exec, Attach and PortForward: each checks its target, then mints a one-time streaming URL."""

from __future__ import annotations

from typing import Any

from cri_shim.api import api_pb2 as api
from cri_shim.oci import values
from cri_shim.runtime.manager import ContainerManager
from cri_shim.sandbox import SandboxManager
from cri_shim.streaming import StreamingServer
from cri_shim.streaming.requests import ATTACH, EXEC, PORTFORWARD


class StreamingService:
    """Thin handlers: the streaming server validates and caches the request under its token.

    The target is checked here, before a token is minted, so a client learns of an unknown
    or stopped container from the status code (NOT_FOUND, FAILED_PRECONDITION) and not from
    a stream that fails later.
    """

    def __init__(self, server: StreamingServer, containers: ContainerManager, sandboxes: SandboxManager) -> None:
        self.server = server
        self.containers = containers
        self.sandboxes = sandboxes

    async def Exec(self, request: api.ExecRequest, context: Any) -> api.ExecResponse:
        self.containers.running(request.container_id)
        values.check_exec(request.cmd)
        url = self.server.url(EXEC, request)
        return api.ExecResponse(url=url)

    async def Attach(self, request: api.AttachRequest, context: Any) -> api.AttachResponse:
        self.containers.running(request.container_id)
        url = self.server.url(ATTACH, request)
        return api.AttachResponse(url=url)

    async def PortForward(self, request: api.PortForwardRequest, context: Any) -> api.PortForwardResponse:
        self.sandboxes.get(request.pod_sandbox_id)
        url = self.server.url(PORTFORWARD, request)
        return api.PortForwardResponse(url=url)
