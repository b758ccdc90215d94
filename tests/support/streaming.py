"""An in-process StreamingServer on host-process backends, for tests that drive it with the
SPDY and WebSocket clients in the same event loop (so they can also await backend events)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cri_shim.api import api_pb2 as pb
from cri_shim.config import StreamingConfig
from cri_shim.streaming import Backends, StreamingServer
from tests.support.host_backend import HostAttach, HostContainer, HostExec, TcpDial

# A scenario that has not finished after this long is hung: fail it rather than block the run.
HANG_GUARD = 120.0


def scenario(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async test in its own event loop, failing it if it hangs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def guarded() -> None:
            async with asyncio.timeout(HANG_GUARD):
                await fn(*args, **kwargs)

        asyncio.run(guarded())

    return wrapper


@dataclass
class Clock:
    """Monotonic time that tests can move forward (token expiry without waiting)."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@dataclass
class Harness:
    server: StreamingServer
    exec: HostExec
    attach: HostAttach
    dial: TcpDial
    clock: Clock
    containers: list[HostContainer] = field(default_factory=list)

    def exec_url(self, *cmd: str, stdin: bool = False, stdout: bool = True, stderr: bool = True, tty: bool = False) -> str:
        request = pb.ExecRequest(container_id="ctr", cmd=list(cmd), stdin=stdin, stdout=stdout, stderr=stderr and not tty, tty=tty)
        return self.server.url("exec", request)

    def attach_url(self, container_id: str, stdin: bool = True, stdout: bool = True, stderr: bool = True, tty: bool = False) -> str:
        request = pb.AttachRequest(container_id=container_id, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
        return self.server.url("attach", request)

    def portforward_url(self, sandbox: str = "pod") -> str:
        return self.server.url("portforward", pb.PortForwardRequest(pod_sandbox_id=sandbox))

    async def container(self, container_id: str, cmd: list[str], stdin_once: bool = False) -> HostContainer:
        container = HostContainer(cmd, stdin_once)
        await container.start()
        self.attach.containers[container_id] = container
        self.containers.append(container)
        return container


@contextlib.asynccontextmanager
async def harness(**cfg: Any) -> AsyncIterator[Harness]:
    clock = Clock()
    backends = Backends(HostExec(), HostAttach(), TcpDial())
    server = StreamingServer(StreamingConfig(**cfg), backends, clock=clock)
    h = Harness(server, backends.exec, backends.attach, backends.portforward, clock)  # type: ignore[arg-type]
    await h.server.start()
    try:
        yield h
    finally:
        await h.server.close()
        for container in h.containers:
            await container.stop()


async def http_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def hello_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A one-request HTTP/1.0 server answering `hello <path>`."""
    head = await reader.readuntil(b"\r\n\r\n")
    body = b"hello " + head.split(b" ")[1]
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echoes until the client half-closes, then closes."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
