"""Port-forward over SPDY/3.1 (and tunnelled in WebSocket) to real TCP servers on loopback."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.support import ws_client
from tests.support.portforward_client import PortForward
from tests.support.spdy_client import StreamRefused
from tests.support.streaming import echo, harness, hello_http, http_server, scenario

pytestmark = pytest.mark.integration


@scenario
async def test_several_http_requests_over_one_connection():
    server, port = await http_server(hello_http)
    async with harness() as h:
        pf = await PortForward.start(h.portforward_url("pod-a"))
        for i in range(3):
            reply, error = await pf.exchange(port, f"GET /seq{i} HTTP/1.0\r\n\r\n".encode())
            assert reply.endswith(f"hello /seq{i}".encode()) and reply.startswith(b"HTTP/1.0 200 OK")
            assert error == b""
        await pf.close()
        assert h.dial.dialed == [("pod-a", port)] * 3
    server.close()


@scenario
async def test_concurrent_forwards_on_one_connection():
    server, port = await http_server(hello_http)
    async with harness() as h:
        pf = await PortForward.start(h.portforward_url())
        # Streams are opened one by one (each waits for its reply); the forwards then overlap.
        pairs = [await pf.open(port) for _ in range(20)]

        async def fetch(i: int, error, data) -> bytes:
            await data.write(f"GET /c{i} HTTP/1.0\r\n\r\n".encode())
            await data.close()
            reply, message = await asyncio.gather(data.read_all(), error.read_all())
            assert message == b""
            return reply

        replies = await asyncio.gather(*(fetch(i, e, d) for i, (e, d) in enumerate(pairs)))
        assert [r.rsplit(b" ", 1)[1] for r in replies] == [f"/c{i}".encode() for i in range(20)]
        await pf.close()
    server.close()


@scenario
async def test_bulk_data_round_trips_through_an_echo_server():
    server, port = await http_server(echo)
    payload = os.urandom(2 * 1024 * 1024 + 123)
    async with harness() as h:
        pf = await PortForward.start(h.portforward_url())
        reply, error = await pf.exchange(port, payload)
        assert reply == payload and error == b""
        await pf.close()
    server.close()


@scenario
async def test_dial_failure_reports_on_the_error_stream_and_the_connection_goes_on():
    server, port = await http_server(hello_http)
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with harness() as h:
        pf = await PortForward.start(h.portforward_url("pod-x"))
        error, data = await pf.open(dead_port)
        message, rest = await asyncio.gather(error.read_all(), data.read_all())
        assert message.startswith(f"error forwarding port {dead_port} to pod pod-x".encode())
        assert b"onnect" in message and rest == b""
        reply, error_text = await pf.exchange(port, b"GET /after HTTP/1.0\r\n\r\n")
        assert reply.endswith(b"hello /after") and error_text == b""
        await pf.close()
    server.close()


@scenario
async def test_pairs_without_requestid_fall_back_to_stream_ids():
    server, port = await http_server(hello_http)
    async with harness() as h:
        pf = await PortForward.start(h.portforward_url())
        error = await pf.conn.open_stream({"streamtype": "error", "port": str(port)})
        await error.close()
        data = await pf.conn.open_stream({"streamtype": "data", "port": str(port)})
        await data.write(b"GET /legacy HTTP/1.0\r\n\r\n")
        await data.close()
        reply, message = await asyncio.gather(data.read_all(), error.read_all())
        assert reply.endswith(b"hello /legacy") and message == b""
        await pf.close()
    server.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"streamtype": "data", "requestid": "0"},
        {"streamtype": "data", "port": "0", "requestid": "0"},
        {"streamtype": "data", "port": "http", "requestid": "0"},
        {"streamtype": "stdout", "port": "80", "requestid": "0"},
    ],
)
@scenario
async def test_streams_without_usable_headers_are_refused(headers):
    async with harness() as h:
        pf = await PortForward.start(h.portforward_url())
        with pytest.raises(StreamRefused):
            await pf.conn.open_stream(headers)
        await pf.conn.ping()  # the connection itself is fine
        await pf.close()


@scenario
async def test_port_forward_tunnelled_in_websocket():
    server, port = await http_server(hello_http)
    async with harness() as h:
        pf = await ws_client.tunnel_port_forward(h.portforward_url())
        assert pf.conn.protocol == "portforward.k8s.io"
        for i in range(3):
            reply, error = await pf.exchange(port, f"GET /ws{i} HTTP/1.0\r\n\r\n".encode())
            assert reply.endswith(f"hello /ws{i}".encode()) and error == b""
        await pf.close()
    server.close()
