"""The Exec, Attach and PortForward requests a streaming URL stands for.

The RPC handlers hand over the CRI messages; they are validated here (CRI §1.2 rows 18-20) and
frozen into plain dataclasses, so the cached request cannot change between the RPC and the
stream, and the streaming code does not depend on the generated API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cri_shim.errors import InvalidArgument

EXEC, ATTACH, PORTFORWARD = "exec", "attach", "portforward"
KINDS = (EXEC, ATTACH, PORTFORWARD)


@dataclass(frozen=True, kw_only=True)
class Streams:
    """The container stdio streams an Exec or Attach asks for (tty: one terminal, no stderr)."""

    tty: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False


@dataclass(frozen=True)
class ExecRequest(Streams):
    container_id: str
    cmd: tuple[str, ...]


@dataclass(frozen=True)
class AttachRequest(Streams):
    container_id: str


@dataclass(frozen=True)
class PortForwardRequest:
    pod_sandbox_id: str
    # Ports named in the RPC; often empty (crictl and kubelet name the port per stream).
    ports: tuple[int, ...] = ()


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest


def _streams(msg: Any) -> dict[str, bool]:
    """The streams an Exec or Attach message asks for, validated."""
    if not msg.container_id:
        raise InvalidArgument("missing required container_id")
    if msg.tty and msg.stderr:
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (msg.stdin or msg.stdout or msg.stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")
    return {"tty": msg.tty, "stdin": msg.stdin, "stdout": msg.stdout, "stderr": msg.stderr}


def from_cri(kind: str, msg: Any) -> StreamRequest:
    """Validates a runtime.v1 ExecRequest, AttachRequest or PortForwardRequest (or anything
    with the same fields) and returns its frozen form; InvalidArgument when it is unusable."""
    if kind == EXEC:
        streams = _streams(msg)
        if not msg.cmd:
            raise InvalidArgument("cmd must not be empty")
        return ExecRequest(msg.container_id, tuple(msg.cmd), **streams)
    if kind == ATTACH:
        return AttachRequest(msg.container_id, **_streams(msg))
    if kind == PORTFORWARD:
        if not msg.pod_sandbox_id:
            raise InvalidArgument("missing required pod_sandbox_id")
        ports = tuple(int(p) for p in msg.port)
        if any(not 0 < p < 65536 for p in ports):
            raise InvalidArgument(f"invalid port in {list(ports)}")
        return PortForwardRequest(msg.pod_sandbox_id, ports)
    raise ValueError(f"unknown streaming kind {kind!r}")
