"""The streaming server under misuse and load: tokens, negotiation, malformed frames and
requests (refused, the server keeps serving), many concurrent sessions."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from cri_shim.streaming.spdy import frames as f
from cri_shim.streaming.spdy.dictionary import SPDY3_DICTIONARY
from tests.support import spdy_client
from tests.support.portforward_client import PortForward
from tests.support.spdy_client import RemoteCommand, StreamRefused
from tests.support.streaming import echo, harness, http_server, scenario
from tests.support.upgrade import UpgradeFailed, upgrade

pytestmark = pytest.mark.integration


async def still_serves(h) -> None:
    result = await spdy_client.run(h.exec_url("echo", "alive"))
    assert result.stdout == b"alive\n" and result.exit_code == 0


@scenario
async def test_tokens_are_single_use():
    async with harness() as h:
        url = h.exec_url("echo", "once")
        assert (await spdy_client.run(url)).stdout == b"once\n"
        with pytest.raises(UpgradeFailed) as failed:
            await spdy_client.connect(url)
        assert failed.value.status == 404


@scenario
async def test_expired_unknown_and_misrouted_tokens_get_404():
    async with harness(token_ttl_seconds=60) as h:
        expired = h.exec_url("echo")
        h.clock.offset += 61
        fresh = h.exec_url("echo", "fresh")
        base = h.server.base_url
        for url in (expired, f"{base}/exec/nosuchtoken", fresh.replace("/exec/", "/attach/"), f"{base}/other/x", f"{base}/exec"):
            with pytest.raises(UpgradeFailed) as failed:
                await spdy_client.connect(url)
            assert failed.value.status == 404, url
        # The misrouted attempt did not use the exec token up.
        assert (await spdy_client.run(fresh)).stdout == b"fresh\n"


@scenario
async def test_get_upgrades_too_and_other_methods_are_refused():
    async with harness() as h:
        conn = await spdy_client.connect(h.exec_url("true"), method="GET")
        assert conn.protocol == "v5.channel.k8s.io"
        await conn.close()
        with pytest.raises(UpgradeFailed) as failed:
            await upgrade(h.exec_url("true"), "DELETE", [])
        assert failed.value.status == 405


@scenario
async def test_protocol_negotiation_failures():
    async with harness() as h:
        with pytest.raises(UpgradeFailed) as failed:
            await spdy_client.connect(h.exec_url("true"), ("v9.channel.k8s.io",))
        assert failed.value.status == 403
        assert "v4.channel.k8s.io" in failed.value.headers["x-accepted-stream-protocol-versions"]
        with pytest.raises(UpgradeFailed) as failed:
            await spdy_client.connect(h.portforward_url(), ("v4.channel.k8s.io",))
        assert failed.value.status == 403
        assert failed.value.headers["x-accepted-stream-protocol-versions"] == ["portforward.k8s.io"]
        with pytest.raises(UpgradeFailed) as failed:
            await upgrade(h.exec_url("true"), "POST", [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")])
        assert failed.value.status == 400
        await still_serves(h)


def _control(ftype: int, payload: bytes, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, ftype, len(payload)) + payload


def _bomb() -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, SPDY3_DICTIONARY)
    plain = struct.pack(">II", 1, 1) + b"x" + struct.pack(">I", 50_000_000) + b"\0" * 50_000_000
    return _control(f.SYN_STREAM, struct.pack(">IIH", 1, 0, 0) + z.compress(plain) + z.flush(zlib.Z_SYNC_FLUSH))


MALFORMED = {
    "wrong version": _control(f.PING, b"\0\0\0\1", version=2),
    "bad length": _control(f.GOAWAY, b"\0\0\0\1"),
    "bad zlib": _control(f.SYN_STREAM, struct.pack(">IIH", 1, 0, 0) + b"\x78\xbb garbage garbage"),
    "huge control frame": struct.pack(">HHI", 0x8003, f.SYN_STREAM, 0xFFFFFF) + b"\0" * 1024,
    "header bomb": _bomb(),
    "zero stream id": struct.pack(">II", 0, 4) + b"data",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
@scenario
async def test_malformed_frames_end_that_connection_only(name):
    async with harness() as h:
        conn = await spdy_client.connect(h.exec_url("echo"))
        await conn.send_raw(MALFORMED[name])
        await conn.closed.wait()
        assert conn.goaway is not None and conn.goaway.status == f.GOAWAY_PROTOCOL_ERROR
        assert h.exec.started == 0
        await conn.close()
        await still_serves(h)


@scenario
async def test_out_of_order_stream_ids_are_reset():
    async with harness() as h:
        conn = await spdy_client.connect(h.exec_url("echo", "x"))
        first = await conn.open_stream({"streamtype": "error"})
        conn._next_id = 5
        await conn.open_stream({"streamtype": "stdout"})
        conn._next_id = 3  # lower than the last one
        with pytest.raises(StreamRefused):
            await conn.open_stream({"streamtype": "stderr"})
        conn._next_id = 8  # even: a server-side id
        with pytest.raises(StreamRefused):
            await conn.open_stream({"streamtype": "stderr"})
        conn._next_id = 11
        await conn.open_stream({"streamtype": "stderr"})
        # All expected streams arrived: the command runs and reports as usual.
        assert b"Success" in await first.read_all()
        await conn.close()


@scenario
async def test_garbage_instead_of_http_and_abandoned_connections():
    async with harness() as h:
        for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 50 + b"\r\n\r\n", b"GET /\r\n\r\n", b"POST /exec/x HTTP/1.1\r\n" + b"X: y\r\n" * 300 + b"\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", h.server.port)
            writer.write(junk)
            await writer.drain()
            answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:40]
            writer.close()
        for _ in range(5):  # connect and leave, mid-head
            reader, writer = await asyncio.open_connection("127.0.0.1", h.server.port)
            writer.write(b"POST /exec/")
            await writer.drain()
            writer.close()
        await still_serves(h)


@scenario
async def test_fifty_concurrent_sessions():
    async with harness() as h:
        urls = [h.exec_url("sh", "-c", f"cat; echo session-{i}", stdin=True) for i in range(50)]
        results = await asyncio.gather(*(spdy_client.run(url, stdin=f"in-{i}\n".encode()) for i, url in enumerate(urls)))
        assert [r.stdout for r in results] == [f"in-{i}\nsession-{i}\n".encode() for i in range(50)]
        assert all(r.exit_code == 0 for r in results)
        assert len(h.server.tokens) == 0


@scenario
async def test_close_ends_open_connections():
    async with harness() as h:
        cmd = await RemoteCommand.start(h.exec_url("sh", "-c", "echo started; exec sleep 600"))
        await cmd.wait_output(b"started")
        server, port = await http_server(echo)
        pf = await PortForward.start(h.portforward_url())
        error, data = await pf.open(port)
        await h.server.close()
        await asyncio.gather(cmd.conn.closed.wait(), pf.conn.closed.wait())
        assert await data.read_all() == b"" and await error.read_all() == b""
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", h.server.port)
        await asyncio.gather(cmd.conn.close(), pf.close())
        server.close()


@scenario
async def test_idle_connections_are_closed():
    async with harness(idle_timeout_seconds=1) as h:
        pf = await PortForward.start(h.portforward_url())
        await pf.conn.ping()  # traffic: alive
        await pf.conn.closed.wait()  # then nothing: the server drops it
        with pytest.raises(ConnectionError):
            await pf.conn.ping()
        await pf.close()
        await still_serves(h)
