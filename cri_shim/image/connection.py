"""HTTP connections to registries: direct or through a proxy, TLS by host, kept alive in a pool.

A request to an https origin through a proxy goes in a CONNECT tunnel (the proxy sees the host
name and the Proxy-Authorization of its own URL, nothing of the request); a plain-http request
goes to the proxy with its absolute URI. A connection whose response was read to its end goes
back to the pool of its origin, so the blobs of a pull and the next pull reuse it; the pool
keeps a few idle connections per origin and a bounded number in all, each for a short while.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from cri_shim.image.proxy import Proxy, ProxySettings

IDLE_PER_ORIGIN = 4
IDLE_TOTAL = 32
IDLE_SECONDS = 30.0
MAX_PROXY_HEAD = 16 * 1024


class ProxyFailure(OSError):
    """The proxy refused or broke the tunnel; the message names the proxy, never its credentials."""


@dataclass(frozen=True)
class Origin:
    """scheme://host:port, what a connection is made to and pooled by."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, parts: urllib.parse.SplitResult) -> Origin:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname or "", port)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"


class Response(http.client.HTTPResponse):
    """A response that knows its connection, which goes back to the pool once it was read."""

    connection: Connection | None = None


class Connection(http.client.HTTPConnection):
    """One connection to an origin, made by connect() directly or through the proxy."""

    response_class = Response

    def __init__(self, origin: Origin, proxy: Proxy | None, tls: ssl.SSLContext | None, timeout: float) -> None:
        super().__init__(origin.host, origin.port, timeout=timeout)
        self.origin = origin
        self.proxy = proxy
        self.tls = tls
        self.idle_since = 0.0

    def connect(self) -> None:
        via = self.proxy
        sock = socket.create_connection((via.host, via.port) if via else (self.origin.host, self.origin.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if via is not None and self.tls is not None:
                self._tunnel_through(sock, via)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.origin.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _tunnel_through(self, sock: socket.socket, via: Proxy) -> None:
        """CONNECT origin at the proxy; its answer head is bounded and must be all it sends."""
        head = f"CONNECT {self.origin.netloc} HTTP/1.1\r\nHost: {self.origin.netloc}\r\n"
        if via.authorization:
            head += f"Proxy-Authorization: {via.authorization}\r\n"
        sock.sendall((head + "\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            if len(answer) > MAX_PROXY_HEAD:
                raise ProxyFailure(f"proxy {via}: answer to CONNECT larger than {MAX_PROXY_HEAD} bytes")
            chunk = sock.recv(4096)
            if not chunk:
                raise ProxyFailure(f"proxy {via} closed the connection instead of answering CONNECT {self.origin.netloc}")
            answer += chunk
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProxyFailure(f"proxy {via}: not an HTTP answer to CONNECT: {status_line[:100]!r}")
        if parts[1] != "200":
            reason = parts[2][:100] if len(parts) > 2 else ""
            hint = " (credentials in the proxy URL missing or refused)" if parts[1] == "407" else ""
            raise ProxyFailure(f"proxy {via} refused CONNECT {self.origin.netloc}: {parts[1]} {reason}{hint}")
        if not answer.endswith(b"\r\n\r\n"):
            raise ProxyFailure(f"proxy {via} sent data before the tunnel was in use")

    def target(self, parts: urllib.parse.SplitResult) -> str:
        """The request target: the absolute URI for a plain-http request through a proxy."""
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if self.proxy is not None and self.tls is None:
            return f"{self.origin}{path}"
        return path

    def proxy_headers(self) -> dict[str, str]:
        """Proxy-Authorization for a request the proxy itself reads (plain http through it)."""
        if self.proxy is not None and self.tls is None and self.proxy.authorization:
            return {"Proxy-Authorization": self.proxy.authorization}
        return {}


class Pool:
    """Idle connections by origin, bounded; how connections are made (proxy, TLS) by origin."""

    def __init__(self, proxies: ProxySettings, tls: Callable[[Origin], ssl.SSLContext]) -> None:
        self.proxies = proxies
        self._tls = tls
        self._idle: dict[Origin, list[Connection]] = {}
        self._lock = threading.Lock()

    def get(self, origin: Origin, timeout: float) -> tuple[Connection, bool]:
        """An idle connection to origin (True) or a new, unconnected one (False)."""
        with self._lock:
            self._expire(time.monotonic())
            idle = self._idle.get(origin)
            if idle:
                conn = idle.pop()
                if not idle:
                    del self._idle[origin]
                if conn.sock is not None:
                    conn.timeout = timeout
                    conn.sock.settimeout(timeout)
                    return conn, True
                conn.close()
        if origin.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {origin.scheme!r}")
        proxy = self.proxies.for_url(origin.scheme, origin.host, origin.port)
        tls = self._tls(origin) if origin.scheme == "https" else None
        return Connection(origin, proxy, tls, timeout), False

    def put(self, conn: Connection) -> None:
        """Keeps a connection whose last response was read to its end, within the bounds."""
        conn.idle_since = time.monotonic()
        closing: list[Connection] = []
        with self._lock:
            idle = self._idle.setdefault(conn.origin, [])
            idle.append(conn)
            if len(idle) > IDLE_PER_ORIGIN:
                closing.append(idle.pop(0))
            while sum(len(v) for v in self._idle.values()) > IDLE_TOTAL:
                oldest = min(self._idle, key=lambda o: self._idle[o][0].idle_since)
                closing.append(self._idle[oldest].pop(0))
                if not self._idle[oldest]:
                    del self._idle[oldest]
        for old in closing:
            old.close()

    def _expire(self, now: float) -> None:
        for origin in list(self._idle):
            keep = []
            for conn in self._idle[origin]:
                if now - conn.idle_since > IDLE_SECONDS:
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()
