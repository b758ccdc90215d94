"""The streaming server for Exec, Attach and PortForward (SPDY/3.1 and WebSocket)."""

from cri_shim.streaming.backend import (
    AttachBackend,
    Backends,
    ExecBackend,
    PortForwardBackend,
    StreamIO,
    TerminalSize,
)
from cri_shim.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from cri_shim.streaming.server import StreamingServer

__all__ = [
    "AttachBackend",
    "AttachRequest",
    "Backends",
    "ExecBackend",
    "ExecRequest",
    "PortForwardBackend",
    "PortForwardRequest",
    "StreamIO",
    "StreamingServer",
    "TerminalSize",
]
