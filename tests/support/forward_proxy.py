"""A small forward HTTP proxy on 127.0.0.1 that counts what passes: CONNECT tunnels and
absolute-URI requests, as corporate proxies serve them.

    proxy = ForwardProxy(names={"registry.test": "127.0.0.1"}, credentials=("u", "p")).start()
    proxy.url                 # "http://127.0.0.1:<port>"
    proxy.connections         # TCP connections accepted
    proxy.tunnels[target]     # CONNECT host:port that were let through
    proxy.requests[url]       # absolute-URI requests forwarded
    proxy.heads               # every request head received (CONNECT and plain), as text
    proxy.refused             # requests answered 407

names maps host names only the proxy can resolve (the daemon under test has no DNS), so a pull
of registry.test:<port> can only succeed through the proxy. Stopped by stop(); connections
still open are shut.
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import socketserver
import threading
from collections import Counter

MAX_HEAD = 64 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


class ForwardProxy:
    def __init__(self, names: dict[str, str] | None = None, credentials: tuple[str, str] | None = None) -> None:
        self.names = names or {}
        self.expected = "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode() if credentials else ""
        self.connections = 0
        self.tunnels: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.heads: list[str] = []
        self.refused = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy.serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"

    def start(self) -> ForwardProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def resolve(self, host: str) -> str:
        return self.names.get(host, host)

    def serve(self, client: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(client)
        reader = client.makefile("rb")
        try:
            while True:
                head = self._head(reader)
                if head is None:
                    return
                with self._lock:
                    self.heads.append(head)
                lines = head.split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                if self.expected and headers.get("Proxy-Authorization") != self.expected:
                    with self._lock:
                        self.refused += 1
                    client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
                                   b"Content-Length: 0\r\n\r\n")
                    continue
                if method == "CONNECT":
                    self._tunnel(client, target)
                    return
                if not self._forward(client, reader, method, target, headers):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._open.discard(client)
            reader.close()
            client.close()

    @staticmethod
    def _head(reader: object) -> str | None:
        data = b""
        while not data.endswith(b"\r\n\r\n"):
            line = reader.readline(MAX_HEAD)  # type: ignore[attr-defined]
            if not line:
                return None
            data += line
            if len(data) > MAX_HEAD:
                return None
        return data.decode("latin-1").rstrip("\r\n")

    def _tunnel(self, client: socket.socket, target: str) -> None:
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((self.resolve(host), int(port)), timeout=10)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with self._lock:
            self.tunnels[target] += 1
            self._open.add(upstream)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            pair = {client: upstream, upstream: client}
            while True:
                ready, _, _ = select.select(list(pair), [], [], 60)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        finally:
            with self._lock:
                self._open.discard(upstream)
            upstream.close()

    def _forward(self, client: socket.socket, reader: object, method: str, target: str, headers: dict[str, str]) -> bool:
        """Forwards one absolute-URI request; True if the client connection may carry another."""
        if not target.startswith("http://"):
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return False
        hostport, _, path = target[len("http://"):].partition("/")
        host, _, port = hostport.rpartition(":")
        with self._lock:
            self.requests[target] += 1
        length = int(headers.get("Content-Length", "0"))
        body = reader.read(length) if length else None  # type: ignore[attr-defined]
        send = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(self.resolve(host), int(port or 80), timeout=30)
        try:
            conn.request(method, "/" + path, body=body, headers=send)
            resp = conn.getresponse()
            data = resp.read()
            out = [f"HTTP/1.1 {resp.status} {resp.reason}"]
            out += [f"{k}: {v}" for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
            out.append(f"Content-Length: {len(data)}")
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return False
        finally:
            conn.close()
        client.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + (b"" if method == "HEAD" else data))
        return headers.get("Connection", "").lower() != "close"
