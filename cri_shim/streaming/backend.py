"""What the streaming server asks of the runtime: the backend interfaces and the I/O they get.

The server speaks the wire protocols (SPDY, WebSocket) and hands a backend a StreamIO: the
client's stdin as an async reader (b"" once the client half-closes it), stdout/stderr as async
writers, and terminal resizes. The backend runs the command or joins the container's stdio and
reports how it ended; the server turns that into the protocol's status message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from cri_shim.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


class InputStream(Protocol):
    async def read(self, n: int = 65536) -> bytes:
        """Up to n bytes; b"" at end of input (the client half-closed, or left)."""


class OutputStream(Protocol):
    async def write(self, data: bytes) -> None:
        """Sends data to the client; raises ConnectionError once the client cannot receive."""


@dataclass
class StreamIO:
    """The client side of one exec or attach, as the backend sees it.

    stdin/stdout/stderr are None when the request did not ask for them (tty requests never
    have stderr: the terminal merges it into stdout). `resizes` yields each size the client
    sends, the first one usually before any output; it ends when the client stops sending.
    `disconnected` is set when the client's connection ends, so a backend can stop work
    nobody will see.
    """

    tty: bool
    stdin: InputStream | None
    stdout: OutputStream | None
    stderr: OutputStream | None
    resize_queue: asyncio.Queue[TerminalSize | None] = field(default_factory=asyncio.Queue)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        while (size := await self.resize_queue.get()) is not None:
            yield size


class ExecBackend(Protocol):
    async def exec(self, request: ExecRequest, io: StreamIO) -> int:
        """Runs request.cmd in the container wired to io; returns its exit code once it has
        exited and its output has been written. Raises (any exception) when it could not be
        run: the client gets the message as an InternalError status."""


class AttachBackend(Protocol):
    async def attach(self, request: AttachRequest, io: StreamIO) -> None:
        """Joins the container's stdio (or terminal) until its output closes (the container
        exited) or the client leaves. Other attachers may be joined at the same time; stdin
        EOF closes the container's stdin only when the container was created with stdin_once.
        Raises when the container cannot be attached to."""


class PortForwardBackend(Protocol):
    async def dial(self, request: PortForwardRequest, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to `port` on localhost in the sandbox's network namespace. Raises
        (OSError or any exception) when it cannot connect: the message goes to the client."""


@dataclass
class Backends:
    exec: ExecBackend | None = None
    attach: AttachBackend | None = None
    portforward: PortForwardBackend | None = None
