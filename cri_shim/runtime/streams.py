"""The streaming server's backends on real containers and pods.

ContainerStreams serves exec (cri_shim.runtime.execstream: `runc exec` wired to the client)
and attach: a connection to the container's monitor's attach socket (framing: Monitor.attach_output), so
any number of attachers share the container's stdio while conmon goes on logging it. Stdin
EOF shuts down our write side only for a stdin_once container, whose stdin conmon then closes;
resizes go through conmon's control FIFO.

PodPortForward dials localhost inside the pod's network namespace, with a socket made there
(cri_shim.linux.netns), so a pod's loopback-only servers are reachable as kubectl expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

from cri_shim.errors import FailedPrecondition
from cri_shim.linux import netns
from cri_shim.runtime import execstream, execsync
from cri_shim.runtime.containers import ContainerRuntime
from cri_shim.runtime.monitor import Monitor
from cri_shim.runtime.record import ContainerRecord
from cri_shim.streaming.backend import InputStream, StreamIO
from cri_shim.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest

LOCALHOST = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


class ContainerStreams:
    """ExecBackend and AttachBackend over the runc/conmon layer. running(id or prefix) is the
    record of a running container (the lifecycle owner's lookup), so both raise NotFound for
    unknown containers and FailedPrecondition for containers that are not running."""

    def __init__(self, running: Callable[[str], ContainerRecord], runtime: ContainerRuntime) -> None:
        self.running = running
        self.runtime = runtime

    async def exec(self, request: ExecRequest, io: StreamIO) -> int:
        record = self.running(request.container_id)
        runc = self.runtime.runc(record)
        with execsync.process_files(Path(record.bundle), list(request.cmd), request.tty) as (process_file, pid_file):
            return await execstream.run(runc, record.id, process_file, pid_file, request.tty, io, self.runtime.exec_drain)

    async def attach(self, request: AttachRequest, io: StreamIO) -> None:
        record = self.running(request.container_id)
        monitor = self.runtime.monitor
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, str(monitor.attach_socket(record.id)))
            except (FileNotFoundError, ConnectionRefusedError):
                raise FailedPrecondition(f"container {record.id} is not running (its monitor has no attach socket)") from None
            output = asyncio.create_task(_relay_output(sock, io, monitor))
            left = asyncio.create_task(io.disconnected.wait())
            tasks = [output, left]
            if io.stdin is not None:
                tasks.append(asyncio.create_task(_relay_input(sock, io.stdin, record, monitor.attach_input_max)))
            if record.config.tty:
                tasks.append(asyncio.create_task(self._resize(io, record)))
            try:
                await asyncio.wait([output, left], return_when=asyncio.FIRST_COMPLETED)
                if output.done():
                    output.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _resize(self, io: StreamIO, record: ContainerRecord) -> None:
        with contextlib.suppress(FailedPrecondition):  # the container exited meanwhile
            async for size in io.resizes():
                await self.runtime.monitor.resize(Path(record.bundle), size.height, size.width)


async def _relay_output(sock: socket.socket, io: StreamIO, monitor: Monitor) -> None:
    """The monitor's messages to the client, until it closes the connection (the container
    exited) or the client stops receiving."""
    loop = asyncio.get_running_loop()
    sinks = {"stdout": io.stdout, "stderr": io.stderr}
    with contextlib.suppress(ConnectionError):
        while message := await loop.sock_recv(sock, monitor.attach_message_max):
            parsed = monitor.attach_output(message)
            sink = sinks.get(parsed[0]) if parsed else None
            if parsed is not None and sink is not None:
                await sink.write(parsed[1])


async def _relay_input(sock: socket.socket, stdin: InputStream, record: ContainerRecord, message_max: int) -> None:
    """The client's stdin to the monitor, in messages it reads whole. A container made without
    stdin has nothing to take it: it is read and dropped, so the client's connection never
    stalls on it."""
    if not record.config.stdin:
        while await stdin.read():
            pass
        return
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionError):  # conmon closed the connection: the container exited
        while data := await stdin.read(message_max):
            await loop.sock_sendall(sock, data)
        if record.config.stdin_once:
            sock.shutdown(socket.SHUT_WR)


class PodPortForward:
    """PortForwardBackend: TCP connections to localhost in a pod's network namespace.

    netns_of(sandbox_id) names the pod's pinned network namespace, None for a pod on the host
    network (it raises for unknown pods). 127.0.0.1 is tried first, then ::1, as kubelet does."""

    def __init__(self, netns_of: Callable[[str], str | None]) -> None:
        self.netns_of = netns_of

    async def dial(self, request: PortForwardRequest, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        path = self.netns_of(request.pod_sandbox_id)
        where = "the host network" if path is None else "the pod's network namespace"
        socks = await netns.tcp_sockets(path, tuple(LOCALHOST))
        loop = asyncio.get_running_loop()
        failures = []
        try:
            for sock in socks:
                host = LOCALHOST[sock.family]
                try:
                    await loop.sock_connect(sock, (host, port))
                except OSError as exc:
                    failures.append(f"{host}: {os.strerror(exc.errno) if exc.errno else exc}")
                    continue
                reader, writer = await asyncio.open_connection(sock=sock)
                socks.remove(sock)  # the writer owns it now
                return reader, writer
            raise OSError(f"cannot connect to localhost:{port} in {where}: {'; '.join(failures) or 'no TCP support'}")
        finally:
            for sock in socks:
                sock.close()
