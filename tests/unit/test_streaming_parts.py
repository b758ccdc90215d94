"""The streaming server's pure parts: HTTP negotiation, tokens, request validation, status
JSON, resize messages, WebSocket frames and handshake, configuration."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cri_shim import config
from cri_shim.api import api_pb2 as pb
from cri_shim.errors import InvalidArgument, ResourceExhausted, Unimplemented
from cri_shim.streaming import Backends, StreamingServer, TerminalSize
from cri_shim.streaming import httpio, status, websocket
from cri_shim.streaming.requests import ExecRequest, PortForwardRequest
from cri_shim.streaming.terminal import ResizeDecoder, ResizeError
from cri_shim.streaming.tokens import TokenCache

pytestmark = pytest.mark.unit


def parse(head: bytes) -> httpio.Request:
    """The request a client sending head (and then closing) gets read from its socket."""

    async def go() -> httpio.Request:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            theirs.sendall(head)
            theirs.shutdown(socket.SHUT_WR)
            return (await httpio.read_request(ours))[0]

    return asyncio.run(go())


SPDY_HEAD = (
    b"POST /exec/tok HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: v5.channel.k8s.io\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_request_head_parsing():
    req = parse(SPDY_HEAD)
    assert (req.method, req.path) == ("POST", "/exec/tok")
    assert req.values("x-stream-protocol-version") == ["v5.channel.k8s.io", "v4.channel.k8s.io"]
    assert req.has_token("connection", "UPGRADE")
    assert parse(b"GET /attach/t?x=1 HTTP/1.1\r\nA: b, c\r\n\r\n").values("a") == ["b", "c"]


@pytest.mark.parametrize(
    "head",
    [b"GARBAGE\r\n\r\n", b"GET / HTTP/2\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 200 + b"\r\n"],
)
def test_bad_request_heads(head):
    with pytest.raises(httpio.BadRequest):
        parse(head)


def test_negotiation_picks_the_clients_first_supported_protocol():
    req = parse(SPDY_HEAD)
    protocol, reply = httpio.spdy_upgrade(req, ("v4.channel.k8s.io", "v5.channel.k8s.io"))
    assert protocol == "v5.channel.k8s.io"
    assert reply.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    for line in (b"Connection: Upgrade", b"Upgrade: SPDY/3.1", b"X-Stream-Protocol-Version: v5.channel.k8s.io"):
        assert line + b"\r\n" in reply
    assert b"Content-Length" not in reply


def test_negotiation_failures():
    with pytest.raises(httpio.Refused) as refused:
        httpio.negotiate(parse(SPDY_HEAD), ("portforward.k8s.io",))
    assert refused.value.reply.startswith(b"HTTP/1.1 403 ")
    assert b"X-Accepted-Stream-Protocol-Versions: portforward.k8s.io\r\n" in refused.value.reply
    with pytest.raises(httpio.Refused) as refused:
        httpio.negotiate(parse(b"POST /exec/t HTTP/1.1\r\nConnection: Upgrade\r\n\r\n"), ("v4.channel.k8s.io",))
    assert refused.value.reply.startswith(b"HTTP/1.1 400 ")
    no_upgrade = parse(b"POST /exec/t HTTP/1.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
    with pytest.raises(httpio.Refused, match="400"):
        httpio.spdy_upgrade(no_upgrade, ("v4.channel.k8s.io",))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_single_use_expire_and_are_capped():
    clock = Clock()
    cache = TokenCache(ttl=60, max_tokens=2, clock=clock)
    req = PortForwardRequest("pod")
    a = cache.insert("portforward", req)
    assert len(a) >= 16 and a.replace("-", "").replace("_", "").isalnum()
    assert cache.consume("exec", a) is None  # wrong kind: refused, still valid
    assert cache.consume("portforward", a) is req
    assert cache.consume("portforward", a) is None  # used
    b = cache.insert("portforward", req)
    cache.insert("portforward", req)
    with pytest.raises(ResourceExhausted):
        cache.insert("portforward", req)
    clock.now += 60
    assert cache.consume("portforward", b) is None  # expired
    cache.insert("portforward", req)  # expired ones make room
    assert len(cache) == 1


def test_url_validates_requests():
    server = StreamingServer(config.StreamingConfig(port=12345), Backends(exec=object(), attach=object()))  # type: ignore[arg-type]
    url = server.url("exec", pb.ExecRequest(container_id="c", cmd=["ls"], stdout=True))
    assert url.startswith("http://127.0.0.1:12345/exec/")
    cached = server.tokens.consume("exec", url.rsplit("/", 1)[1])
    assert cached == ExecRequest("c", ("ls",), stdout=True)
    bad = [
        ("exec", pb.ExecRequest(cmd=["ls"], stdout=True), "container_id"),
        ("exec", pb.ExecRequest(container_id="c", cmd=["ls"], tty=True, stderr=True), "tty and stderr"),
        ("exec", pb.ExecRequest(container_id="c", cmd=["ls"]), "one of stdin"),
        ("exec", pb.ExecRequest(container_id="c", stdout=True), "cmd"),
        ("attach", pb.AttachRequest(container_id="c"), "one of stdin"),
        ("attach", pb.AttachRequest(stdin=True), "container_id"),
        ("portforward", pb.PortForwardRequest(), "pod_sandbox_id"),
        ("portforward", pb.PortForwardRequest(pod_sandbox_id="p", port=[0]), "invalid port"),
    ]
    for kind, request, why in bad:
        with pytest.raises(InvalidArgument, match=why):
            server.url(kind, request)
    with pytest.raises(Unimplemented):
        server.url("portforward", pb.PortForwardRequest(pod_sandbox_id="p"))
    assert len(server.tokens) == 0


@pytest.mark.parametrize(
    "address, host", [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("10.1.2.3", "10.1.2.3"), ("node-1", "node-1")]
)
def test_url_host(address, host):
    assert StreamingServer(config.StreamingConfig(address=address, port=1)).base_url == f"http://{host}:1"


def test_status_json():
    assert status.encode(status.for_result(0), "v4.channel.k8s.io") == b'{"status":"Success"}'
    failure = json.loads(status.encode(status.for_result(1, ("sh", "-c", "exit 1")), "v5.channel.k8s.io"))
    assert failure == {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: error executing command [sh -c exit 1], exit code 1",
        "details": {"causes": [{"reason": "ExitCode", "message": "1"}]},
    }
    assert json.loads(status.encode(status.for_result(-9), "v4.channel.k8s.io"))["details"]["causes"][0]["message"] == "137"
    internal = json.loads(status.encode(status.internal_error("boom"), "v4.channel.k8s.io"))
    assert internal == {"status": "Failure", "reason": "InternalError", "code": 500, "message": "Internal error occurred: boom"}
    # v1-v3: nothing on success, the text on failure.
    assert status.encode(status.success(), "v3.channel.k8s.io") == b""
    assert status.encode(status.internal_error("boom"), "channel.k8s.io") == b"Internal error occurred: boom"


def test_resize_messages():
    dec = ResizeDecoder()
    assert dec.feed(b'{"Width":80,"Hei') == []
    assert dec.feed(b'ght":24}\n{"width":1,"height":2} {"Width":3,"Height":4,"x":"}{"}') == [
        TerminalSize(80, 24), TerminalSize(1, 2), TerminalSize(3, 4)
    ]
    assert dec.feed("{\"Width\":5,\"Height\":6}".encode()[:3]) == []
    for bad in (b"[1]", b"42", b'{"Width":-1}', b'{"Width":70000}', b'{"Width":"80"}', b"{" + b" " * 5000):
        with pytest.raises(ResizeError):
            ResizeDecoder().feed(bad)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 65535)), max_size=5), st.integers(1, 7))
def test_resize_messages_survive_any_chunking(sizes, step):
    wire = b"".join(json.dumps({"Width": w, "Height": h}).encode() + b"\n" for w, h in sizes)
    dec = ResizeDecoder()
    got = [s for i in range(0, len(wire), step) for s in dec.feed(wire[i : i + step])]
    assert got == [TerminalSize(w, h) for w, h in sizes]


def test_websocket_frames_both_directions():
    async def go() -> None:
        for payload in (b"", b"x" * 125, b"y" * 126, b"z" * 70000):
            for masked in (True, False):
                reader = asyncio.StreamReader()
                reader.feed_data(websocket.encode_frame(websocket.OP_BINARY, payload, masked=masked))
                assert await websocket.read_frame(reader, want_masked=masked) == (True, websocket.OP_BINARY, payload)
        # Known bytes (RFC 6455 section 5.7): unmasked "Hello", and the masked one.
        assert websocket.encode_frame(websocket.OP_TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
        reader = asyncio.StreamReader()
        reader.feed_data(bytes.fromhex("818537fa213d7f9f4d5158"))
        assert await websocket.read_frame(reader, want_masked=True) == (True, websocket.OP_TEXT, b"Hello")
        for bad, why in [
            (bytes.fromhex("810548656c6c6f"), "must be masked"),
            (bytes.fromhex("c1801234abcd"), "reserved"),
            (bytes.fromhex("098001020304"), "control"),
            (bytes.fromhex("82ff7fffffffffffffff"), "frame of"),
        ]:
            reader = asyncio.StreamReader()
            reader.feed_data(bad)
            with pytest.raises(websocket.WebSocketError, match=why):
                await websocket.read_frame(reader, want_masked=True)

    asyncio.run(go())


def test_websocket_handshake():
    # The RFC 6455 example key.
    assert websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    head = (
        b"GET /exec/t HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v9.channel.k8s.io, v4.channel.k8s.io\r\n\r\n"
    )
    req = parse(head)
    assert httpio.is_websocket(req)
    protocol, reply = websocket.server_handshake(req, ("v5.channel.k8s.io", "v4.channel.k8s.io"))
    assert protocol == "v4.channel.k8s.io"
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in reply
    assert b"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n" in reply
    with pytest.raises(httpio.Refused, match="403"):
        websocket.server_handshake(req, ("v5.channel.k8s.io",))
    with pytest.raises(httpio.Refused, match="426"):
        websocket.server_handshake(parse(head.replace(b"Version: 13", b"Version: 8")), ("v4.channel.k8s.io",))
    with pytest.raises(httpio.Refused, match="400"):
        websocket.server_handshake(parse(head.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short")), ("v4.channel.k8s.io",))


def test_streaming_config_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[streaming]\nport = 10010\nidle_timeout_seconds = 60\nstream_creation_timeout_seconds = 5\n")
    cfg = config.load(path)
    assert (cfg.streaming.port, cfg.streaming.idle_timeout_seconds, cfg.streaming.stream_creation_timeout_seconds) == (10010, 60, 5)
    assert "stream_creation_timeout_seconds = 30" in config.render_defaults()
    for bad in ("port = 70000", "max_tokens = 0", "token_ttl_seconds = -1"):
        path.write_text(f"[streaming]\n{bad}\n")
        with pytest.raises(config.ConfigError, match="streaming"):
            config.load(path)
