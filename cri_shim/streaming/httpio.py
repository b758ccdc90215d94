"""Just enough HTTP/1.1 for the streaming endpoints: one request a connection, then either an
error response or a protocol upgrade (SPDY/3.1 or WebSocket) that takes the socket over.

The request head is read straight from the socket and bounded in size (the server bounds it in
time); anything unparsable gets a 400 and the connection closes. Responses never redirect
(kubelet's SPDY client refuses redirects).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100

# Remote command and port-forward protocol negotiation (k8s httpstream.Handshake).
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"


class BadRequest(ValueError):
    """The request head cannot be parsed."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        """Every value of a header, case-insensitively, comma-separated lists split."""
        name = name.lower()
        out = []
        for key, value in self.headers:
            if key.lower() == name:
                out.extend(v.strip() for v in value.split(",") if v.strip())
        return out

    def header(self, name: str) -> str:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0].strip() if values else ""

    def has_token(self, name: str, token: str) -> bool:
        """Whether a comma-separated header (Connection, Upgrade) holds a token."""
        return token.lower() in (v.lower() for v in self.values(name))

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


async def read_request(sock: socket.socket) -> tuple[Request, bytes]:
    """Reads a request head (not the body: upgrade requests have none) straight from the socket,
    so that no more than MAX_HEAD bytes are ever buffered for a client that has not yet shown a
    token; returns it with what the client sent after it."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    scanned = 0
    while (end := data.find(b"\r\n\r\n", scanned)) < 0:
        if len(data) >= MAX_HEAD:
            raise BadRequest("request head too large")
        scanned = max(0, len(data) - 3)
        chunk = await loop.sock_recv(sock, MAX_HEAD - len(data))
        if not chunk:
            raise BadRequest("connection closed inside the request head")
        data += chunk
    return parse_request(bytes(data[: end + 4])), bytes(data[end + 4 :])


def parse_request(head: bytes) -> Request:
    """The request of a head that ends with its blank line."""
    text = head.decode("latin-1")
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip()))
    if len(headers) > MAX_HEADERS:
        raise BadRequest("too many headers")
    return Request(parts[0], parts[1], tuple(headers))


def response(status: int, headers: list[tuple[str, str]] | None = None, body: str = "") -> bytes:
    """A complete response; bodies are plain text and the connection closes after it."""
    raw = body.encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if status != 101:
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(raw)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


class Refused(Exception):
    """The request cannot be upgraded; `reply` is the response to send."""

    def __init__(self, reply: bytes) -> None:
        super().__init__(reply.split(b"\r\n", 1)[0].decode())
        self.reply = reply


def negotiate(request: Request, supported: tuple[str, ...]) -> str:
    """The first protocol the client offers that we support (k8s httpstream.Handshake):
    400 without the header, 403 listing ours when none matches."""
    offered = request.values(PROTOCOL_HEADER)
    if not offered:
        raise Refused(response(400, body=f"unable to upgrade: {PROTOCOL_HEADER} is required"))
    for protocol in offered:
        if protocol in supported:
            return protocol
    accepted = [(ACCEPTED_HEADER, p) for p in supported]
    message = f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server accepts {list(supported)}"
    raise Refused(response(403, accepted, message))


def spdy_upgrade(request: Request, supported: tuple[str, ...]) -> tuple[str, bytes]:
    """The negotiated protocol and the 101 response that switches the socket to SPDY/3.1."""
    protocol = negotiate(request, supported)
    if not request.has_token("Connection", "upgrade") or not any("spdy/3.1" in v.lower() for v in request.values("Upgrade")):
        raise Refused(response(400, body="unable to upgrade: missing upgrade headers in request"))
    headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), (PROTOCOL_HEADER, protocol)]
    return protocol, response(101, headers)


def is_websocket(request: Request) -> bool:
    return request.has_token("Connection", "upgrade") and request.has_token("Upgrade", "websocket")
