"""A CRI client on our own generated stubs, for the unit, integration and restart tiers."""

from __future__ import annotations

import grpc

from cri_shim.api import api_pb2 as api
from cri_shim.api import api_pb2_grpc as rpc

MAX_MESSAGE = 16 * 1024 * 1024


class Cri:
    """RuntimeService and ImageService stubs on one channel, with kubelet's message limits."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(
            endpoint,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)],
        )
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.image = rpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


__all__ = ["Cri", "api"]
