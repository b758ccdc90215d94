"""A CRI client on our own generated stubs, for the unit, integration and restart tiers."""

from __future__ import annotations

import grpc

from cri_shim.api import api_pb2 as api
from cri_shim.api import api_pb2_grpc as rpc

MAX_MESSAGE = 16 * 1024 * 1024


class Cri:
    """RuntimeService and ImageService stubs on one channel, with kubelet's message limits."""

    def __init__(self, endpoint: str, max_message: int = MAX_MESSAGE) -> None:
        """max_message above kubelet's lets a test send what the daemon must refuse."""
        self.channel = grpc.insecure_channel(
            endpoint,
            options=[("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message)],
        )
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.image = rpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


__all__ = ["Cri", "api"]
