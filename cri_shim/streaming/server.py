"""The streaming server the daemon owns: mints URLs for the Exec/Attach/PortForward RPCs and
serves them over HTTP, upgrading each to SPDY/3.1 or WebSocket.

`url()` validates and caches the request under a one-time token and returns an absolute
`http://<addr>:<port>/<kind>/<token>`; kubelet, crictl and critest connect there on their own,
independently of the gRPC call. Exec and attach run against an ExecBackend/AttachBackend,
port-forward dials through a PortForwardBackend (see backend.py); a kind without a backend
cannot be minted.

Any local user can reach the port, so what a connection may cost before its token is checked
is bounded: listener.Listener caps the open connections (and makes room by dropping the oldest
one still sending its head), the head is read straight from the socket up to httpio.MAX_HEAD,
and a connection that has not sent it within head_timeout_seconds is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from cri_shim.config import StreamingConfig
from cri_shim.errors import Unimplemented
from cri_shim.linux.rlimits import open_files
from cri_shim.streaming import httpio, listener, portforward, remotecommand, wschannels
from cri_shim.streaming.backend import Backends
from cri_shim.streaming.requests import KINDS, PortForwardRequest, StreamRequest, from_cri
from cri_shim.streaming.spdy.session import SpdySession
from cri_shim.streaming.transport import StreamTransport, Transport, open_streams
from cri_shim.streaming.tokens import TokenCache
from cri_shim.streaming.websocket import WebSocket, WebSocketTransport, server_handshake

log = logging.getLogger("cri_shim.streaming")

# SPDY tunnelled in WebSocket binary messages (client-go's port-forward over WebSocket).
TUNNEL_PROTOCOLS = tuple("SPDY/3.1+" + p for p in portforward.PROTOCOLS)


def _advertised_host(address: str) -> str:
    """The host part of our URLs: a wildcard bind is reached over loopback (kubelet is local)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # a host name
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"[{ip}]" if ip.version == 6 else str(ip)


class StreamingServer:
    def __init__(self, cfg: StreamingConfig, backends: Backends | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.backends = backends or Backends()
        self.tokens = TokenCache(cfg.token_ttl_seconds, cfg.max_tokens, clock)
        self._listener: listener.Listener | None = None
        self.port = cfg.port

    async def start(self) -> None:
        limit = open_files()
        cap = listener.connection_cap(self.cfg.max_connections, limit)
        if cap < self.cfg.max_connections:
            log.warning("streaming connection cap lowered to fit the open-file limit", extra={"max_connections": cap, "open_files": limit})
        self._listener = listener.Listener(await listener.bind(self.cfg.address, self.cfg.port), self._connection, cap)
        self._listener.start()
        self.port = self._listener.port
        log.info("streaming server listening", extra={"address": self.cfg.address, "port": self.port, "max_connections": cap})

    async def close(self) -> None:
        """Stops listening and ends every open stream connection."""
        if self._listener is not None:
            await self._listener.close()

    @property
    def connections(self) -> int:
        """Streaming connections open now."""
        return self._listener.open if self._listener is not None else 0

    @property
    def base_url(self) -> str:
        return f"http://{_advertised_host(self.cfg.address)}:{self.port}"

    def url(self, kind: str, request: Any) -> str:
        """Validates a CRI Exec/Attach/PortForward request and returns its one-time URL.
        InvalidArgument for a bad request, ResourceExhausted when too many are in flight."""
        if kind not in KINDS:
            raise ValueError(f"unknown streaming kind {kind!r}")
        frozen = from_cri(kind, request)
        if getattr(self.backends, kind) is None:
            raise Unimplemented(f"{kind} is not supported by this runtime")
        return f"{self.base_url}/{kind}/{self.tokens.insert(kind, frozen)}"

    async def _connection(self, sock: socket.socket, peer: str) -> None:
        """One client: its request head within the head timeout, then the upgraded session."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.cfg.head_timeout_seconds):
                try:
                    request, rest = await httpio.read_request(sock)
                except httpio.BadRequest as exc:
                    await loop.sock_sendall(sock, httpio.response(400, body=str(exc)))
                    raise
            assert self._listener is not None  # it runs this
            self._listener.settled()
            reader, writer = await open_streams(sock, rest)
        except (httpio.BadRequest, TimeoutError, OSError):
            sock.close()
            return
        except asyncio.CancelledError:  # the server is closing: the socket is still ours to close
            sock.close()
            raise
        try:
            await self._route(request, reader, writer, peer)
        except httpio.Refused as refused:
            writer.write(refused.reply)
        except (TimeoutError, ConnectionError, OSError):
            pass
        except Exception:  # one broken connection must never take the server down
            log.exception("streaming connection failed", extra={"peer": peer})
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()

    async def _route(self, request: httpio.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in KINDS:
            raise httpio.Refused(httpio.response(404, body="not found"))
        if request.method not in ("GET", "POST"):
            raise httpio.Refused(httpio.response(405, [("Allow", "GET, POST")], "method not allowed"))
        kind, token = parts
        cached = self.tokens.consume(kind, token)
        if cached is None:
            raise httpio.Refused(httpio.response(404, body="unknown or expired streaming token"))
        if getattr(self.backends, kind) is None:
            raise httpio.Refused(httpio.response(501, body=f"{kind} is not supported by this runtime"))
        log.debug("streaming request", extra={"peer": peer, "kind": kind, "method": request.method})
        if httpio.is_websocket(request):
            await self._websocket(request, cached, reader, writer, peer)
        else:
            await self._spdy(request, cached, reader, writer, peer)

    async def _spdy(self, request: httpio.Request, cached: StreamRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        is_pf = isinstance(cached, PortForwardRequest)
        protocol, reply = httpio.spdy_upgrade(request, portforward.PROTOCOLS if is_pf else remotecommand.PROTOCOLS)
        writer.write(reply)
        await writer.drain()
        await self._run_spdy(StreamTransport(reader, writer), protocol, cached, peer)

    async def _run_spdy(self, transport: Transport, protocol: str, cached: StreamRequest, peer: str) -> None:
        timeout = float(self.cfg.stream_creation_timeout_seconds)
        if isinstance(cached, PortForwardRequest):
            backend = self.backends.portforward
            assert backend is not None  # _route refuses kinds without a backend before the upgrade
            session = SpdySession(transport, portforward.validate, self.cfg.idle_timeout_seconds, peer)
            await session.serve(lambda s: portforward.serve(s, cached, backend, timeout))
        else:
            session = SpdySession(transport, lambda _: None, self.cfg.idle_timeout_seconds, peer)
            await session.serve(lambda s: remotecommand.serve(s, protocol, cached, self.backends, timeout))

    async def _websocket(self, request: httpio.Request, cached: StreamRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        is_pf = isinstance(cached, PortForwardRequest)
        protocol, reply = server_handshake(request, TUNNEL_PROTOCOLS if is_pf else wschannels.PROTOCOLS)
        writer.write(reply)
        await writer.drain()
        ws = WebSocket(reader, writer)
        if is_pf:
            await self._run_spdy(WebSocketTransport(ws), protocol.split("+", 1)[1], cached, peer)
        else:
            assert not isinstance(cached, PortForwardRequest)
            await wschannels.serve(ws, protocol, cached, self.backends)

