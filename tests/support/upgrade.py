"""HTTP/1.1 upgrade requests for the streaming clients (SPDY and WebSocket alike)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class UpgradeFailed(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, headers: dict[str, list[str]], body: bytes) -> None:
        super().__init__(f"upgrade refused: {status} {body[:200]!r}")
        self.status = status
        self.headers = headers
        self.body = body


async def upgrade(
    url: str, method: str, headers: list[tuple[str, str]]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, list[str]]]:
    """Sends one request and returns the socket once it answers 101, with the response headers
    (lower-case names). Raises UpgradeFailed (after reading the body) otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"need an absolute http://host:port URL, got {url!r}")
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if method == "POST":
        lines.append("Content-Length: 0")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    got: dict[str, list[str]] = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            got.setdefault(name.strip().lower(), []).append(value.strip())
    if status != 101:
        length = int(got.get("content-length", ["0"])[0])
        body = await reader.readexactly(length) if length else await reader.read()
        writer.close()
        raise UpgradeFailed(status, got, body)
    return reader, writer, got
