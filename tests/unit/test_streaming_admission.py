"""Admission of streaming connections: the bounded read of a request head, the cap and who
makes room at it, accept failures (backed off, logged at a bounded rate), and the cap's fit
under the open-file limit."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from cri_shim import config
from cri_shim.logs import RateLimited
from cri_shim.streaming import httpio, listener

pytestmark = pytest.mark.unit


def test_the_cap_keeps_connections_within_half_the_open_files():
    per = listener.FDS_PER_CONNECTION
    assert listener.connection_cap(256, 1048576) == 256
    assert listener.connection_cap(256, 1024) == 1024 // 2 // per
    assert listener.connection_cap(256, 1024) * per <= 512
    assert listener.connection_cap(256, 3) == 1


def test_cap_and_head_timeout_keys(tmp_path):
    defaults = config.Config().streaming
    assert (defaults.max_connections, defaults.head_timeout_seconds) == (256, 5)
    path = tmp_path / "c.toml"
    path.write_text("[streaming]\nmax_connections = 16\nhead_timeout_seconds = 1\n")
    assert (config.load(path).streaming.max_connections, config.load(path).streaming.head_timeout_seconds) == (16, 1)
    for bad in ("max_connections = 0", "head_timeout_seconds = 0"):
        path.write_text(f"[streaming]\n{bad}\n")
        with pytest.raises(config.ConfigError, match=bad.split(" ")[0]):
            config.load(path)


def test_accept_failures_back_off_from_5_ms_to_a_second():
    delays = [listener.backoff(0.0)]
    while len(delays) < 12:
        delays.append(listener.backoff(delays[-1]))
    assert delays[:3] == [0.005, 0.01, 0.02]
    assert delays[-1] == listener.BACKOFF_MAX == 1.0
    assert delays == sorted(delays)


def test_a_storm_of_events_is_logged_as_a_few_lines_with_counts(caplog):
    log = logging.getLogger("test.ratelimited")

    async def go() -> None:
        limited = RateLimited(log, "storm", 0.02)
        for i in range(1000):
            limited.note(n=i)
        await asyncio.sleep(0.1)  # past the interval: the 999 held back are reported
        limited.note(n=1000)
        limited.close()

    with caplog.at_level(logging.WARNING, logger="test.ratelimited"):
        asyncio.run(go())
    lines = [(r.getMessage(), r.count, r.n) for r in caplog.records]  # type: ignore[attr-defined]
    # The first at once, the rest of the storm as one line; the next after a quiet interval
    # comes at once again.
    assert lines == [("storm", 1, 0), ("storm", 999, 999), ("storm", 1, 1000)]


def test_close_reports_what_is_still_held_back(caplog):
    async def go() -> None:
        limited = RateLimited(logging.getLogger("test.ratelimited"), "storm", 3600)
        for _ in range(5):
            limited.note()
        limited.close()

    with caplog.at_level(logging.WARNING, logger="test.ratelimited"):
        asyncio.run(go())
    assert [r.count for r in caplog.records] == [1, 4]  # type: ignore[attr-defined]


async def sent_then_read(data: bytes) -> tuple[object, bytes]:
    """What read_request makes of data sent by a client that then stays, and what it left unread."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.sendall(data)
        try:
            result: object = await httpio.read_request(ours)
        except httpio.BadRequest as exc:
            result = exc
        theirs.shutdown(socket.SHUT_WR)
        left = b""
        while chunk := await asyncio.get_running_loop().sock_recv(ours, 65536):
            left += chunk
        return result, left


def test_a_head_is_read_with_what_follows_it_and_nothing_more():
    head = b"POST /exec/t HTTP/1.1\r\nUpgrade: SPDY/3.1\r\n\r\n"
    (request, rest), left = asyncio.run(sent_then_read(head + b"\x80\x03frames"))
    assert (request.method, request.path, rest, left) == ("POST", "/exec/t", b"\x80\x03frames", b"")


def test_no_more_than_max_head_is_ever_read_before_the_head_ends():
    endless = b"GET / HTTP/1.1\r\n" + b"X" * (4 * httpio.MAX_HEAD)
    error, left = asyncio.run(sent_then_read(endless))
    assert isinstance(error, httpio.BadRequest) and "too large" in str(error)
    assert len(left) == len(endless) - httpio.MAX_HEAD


class Harness:
    """A Listener on loopback whose handler settles a connection at its first byte, then waits
    for the client to leave."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.listener: listener.Listener
        self.settled: list[str] = []

    async def handle(self, sock: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            if await loop.sock_recv(sock, 1):
                self.listener.settled()
                self.settled.append(peer)
                while await loop.sock_recv(sock, 1):
                    pass
        except OSError:
            pass
        finally:
            sock.close()

    async def connect(self) -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.listener.port))
        return sock

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def harness(cap: int) -> AsyncIterator[Harness]:
    h = Harness(cap)
    h.listener = listener.Listener(await listener.bind("127.0.0.1", 0), h.handle, cap)
    h.listener.start()
    try:
        async with asyncio.timeout(60):
            yield h
    finally:
        await h.listener.close()


async def ended(sock: socket.socket) -> bool:
    """Whether the server closed or reset the client's connection (waits for it)."""
    try:
        return await asyncio.get_running_loop().sock_recv(sock, 1) == b""
    except ConnectionResetError:
        return True


def still_open(sock: socket.socket) -> bool:
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    return False


def test_at_the_cap_a_newcomer_replaces_the_oldest_connection_still_sending_its_head():
    async def go() -> None:
        async with harness(cap=3) as h:
            silent = [await h.connect() for _ in range(3)]
            await h.until(lambda: h.listener.open == 3)
            newcomer = await h.connect()
            assert await ended(silent[0])
            assert still_open(silent[1]) and still_open(silent[2])
            await asyncio.get_running_loop().sock_sendall(newcomer, b"G")
            await h.until(lambda: len(h.settled) == 1)
            assert h.listener.open == 3
            for sock in silent + [newcomer]:
                sock.close()

    asyncio.run(go())


def test_when_every_connection_is_past_its_head_a_newcomer_is_reset_unread():
    async def go() -> None:
        async with harness(cap=2) as h:
            loop = asyncio.get_running_loop()
            sessions = [await h.connect() for _ in range(2)]
            for sock in sessions:
                await loop.sock_sendall(sock, b"G")
            await h.until(lambda: len(h.settled) == 2)
            refused = await h.connect()
            assert await ended(refused)
            assert h.listener.open == 2 and len(h.settled) == 2
            assert all(still_open(sock) for sock in sessions)
            sessions[0].close()  # a session ends: there is room again
            await h.until(lambda: h.listener.open == 1)
            admitted = await h.connect()
            await loop.sock_sendall(admitted, b"G")
            await h.until(lambda: len(h.settled) == 3)
            for sock in (sessions[1], refused, admitted):
                sock.close()

    asyncio.run(go())


def test_accept_failures_back_off_and_are_logged_once_not_per_attempt(caplog, monkeypatch):
    monkeypatch.setattr(listener, "LOG_INTERVAL", 3600.0)

    async def go() -> None:
        async with harness(cap=4) as h:
            client = socket.socket()
            client.setblocking(False)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            lowest_free = os.dup(0)
            os.close(lowest_free)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # accept(2) gets EMFILE
            try:
                with contextlib.suppress(BlockingIOError):
                    client.connect(("127.0.0.1", h.listener.port))
                await h.until(lambda: any(r.getMessage().startswith("streaming server cannot accept") for r in caplog.records))
                await asyncio.sleep(0.2)  # failing all along
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await asyncio.get_running_loop().sock_sendall(client, b"G")
            await h.until(lambda: len(h.settled) == 1)  # accepted once descriptors are back
            client.close()

    with caplog.at_level(logging.WARNING, logger="cri_shim.streaming"):
        asyncio.run(go())
    failures = [r for r in caplog.records if r.getMessage().startswith("streaming server cannot accept")]
    # One line at the first failure, one at close with the count since.
    assert 1 <= len(failures) <= 2
    assert failures[0].errno == errno.EMFILE and failures[0].count == 1  # type: ignore[attr-defined]
