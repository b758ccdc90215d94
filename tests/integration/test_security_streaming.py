"""The streaming port under a flood from any local user: half-open request heads are closed at
the head timeout, the connection cap makes room by dropping the oldest of them (so a token
holder is still served), sessions past their head are never dropped, and a real daemon flooded
from an unprivileged uid keeps answering gRPC, runs and removes pods, stays within its
descriptors, logs a bounded number of lines and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import spdy_client
from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.flood import HALF_HEAD, Flood
from tests.support.leftovers import release_leftovers
from tests.support.pods import changes, pod_config, remove_pod, run_pod, snapshot, warm_up
from tests.support.spdy_client import RemoteCommand
from tests.support.streaming import harness, scenario

pytestmark = pytest.mark.integration


async def half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HALF_HEAD)
    await writer.drain()
    return reader, writer


async def closed_unanswered(reader: asyncio.StreamReader) -> bool:
    """Waits until the server closes (or resets) the connection; whether it answered nothing."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


@scenario
async def test_half_open_heads_are_closed_at_the_head_timeout():
    async with harness(head_timeout_seconds=1) as h:
        conns = [await half_open(h.server.port) for _ in range(20)]
        assert all(await asyncio.gather(*(closed_unanswered(r) for r, _ in conns)))
        await until(lambda: h.server.connections == 0)
        for _, writer in conns:
            writer.close()
        assert (await spdy_client.run(h.exec_url("echo", "alive"))).stdout == b"alive\n"


@scenario
async def test_a_token_holder_is_served_while_half_open_heads_fill_the_cap():
    async with harness(max_connections=8) as h:
        conns = [await half_open(h.server.port) for _ in range(8)]
        await until(lambda: h.server.connections == 8)
        result = await spdy_client.run(h.exec_url("echo", "served"))
        assert (result.stdout, result.exit_code) == (b"served\n", 0)
        assert await closed_unanswered(conns[0][0])  # the oldest made room
        assert h.server.connections <= 8
        for _, writer in conns:
            writer.close()


@scenario
async def test_at_a_cap_of_running_sessions_a_newcomer_is_reset_and_sessions_go_on():
    async with harness(max_connections=2) as h:
        sessions = [await RemoteCommand.start(h.exec_url("sh", "-c", f"echo up-{i}; read x; echo bye-{i}", stdin=True), stdin=True) for i in range(2)]
        for i, cmd in enumerate(sessions):
            await cmd.wait_output(f"up-{i}".encode())
        reader, writer = await asyncio.open_connection("127.0.0.1", h.server.port)
        assert await closed_unanswered(reader)
        writer.close()
        for i, cmd in enumerate(sessions):
            await cmd.send(b"\n")
            await cmd.close_stdin()
            result = await cmd.finish()
            assert result.stdout == f"up-{i}\nbye-{i}\n".encode()
        await until(lambda: h.server.connections == 0)
        assert (await spdy_client.run(h.exec_url("echo", "again"))).stdout == b"again\n"


# The daemon starts with the soft/hard limits of a host without a raised unit (1024 is the
# common soft limit), so that a flood of 1500 connections is well over what it could hold.
NOFILE = (256, 1024)
FLOOD_WIDTH = 1500
HEAD_TIMEOUT = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def flooded_daemon() -> Iterator[Daemon]:
    d = Daemon({"streaming": {"port": free_port(), "head_timeout_seconds": HEAD_TIMEOUT}}, nofile=NOFILE)
    d.start()
    yield d
    d.stop()
    release_leftovers(d)
    shutil.rmtree(d.dir, ignore_errors=True)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_lines(daemon: Daemon) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.startswith("{")]


def test_a_flood_of_half_open_heads_from_nobody_leaves_the_daemon_serving(flooded_daemon: Daemon) -> None:
    daemon = flooded_daemon
    assert daemon.proc is not None
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    assert re.search(r"Max open files\s+1024\s+1024\s", limits), "the soft limit is raised to the hard one"
    cap = next(line["max_connections"] for line in log_lines(daemon) if line["msg"] == "streaming server listening")
    assert cap < FLOOD_WIDTH
    cri = Cri(daemon.endpoint)
    flood = Flood(daemon.config["streaming"]["port"], FLOOD_WIDTH)
    try:
        warm_up(cri)
        before = snapshot(daemon)
        started = time.monotonic()
        flood.start()
        try:
            assert cri.runtime.Version(api.VersionRequest(), timeout=10).runtime_name == "cri-shim"
            pod = run_pod(cri, pod_config("flooded"))
            remove_pod(cri, pod)
            assert cri.runtime.Version(api.VersionRequest(), timeout=10).runtime_name == "cri-shim"
            assert open_fds(daemon.proc.pid) < NOFILE[1] * 3 // 4
        finally:
            counts = flood.stop()  # returns once the daemon closed every flooding connection
        assert counts["opened"] > FLOOD_WIDTH > cap
        assert counts["closed_by_server"] == counts["opened"]
        assert changes(before, snapshot(daemon)) == {}
    finally:
        flood.kill()
        cri.close()
    daemon.stop()  # logs what its rate-limited lines still held back
    elapsed = time.monotonic() - started
    lines = log_lines(daemon)
    text = daemon.log_path.read_text()
    assert "Too many open files" not in text
    assert not [line for line in lines if "exc" in line or line["msg"] == "streaming server cannot accept connections"]
    over_cap = [line for line in lines if line["msg"].startswith("streaming connection cap reached")]
    assert over_cap and len(over_cap) <= elapsed / 10 + 2  # one line an interval, each with a count
