"""A small HTTP proxy in front of a test registry that counts, tampers with, stalls or redirects.

    proxy = RegistryProxy(registry.url).start()
    proxy.tamper.add(digest)      # serve that blob with one byte flipped
    proxy.stall.add(digest)       # send half of that blob, then stall until stop()
    proxy.redirect = True         # answer blob GETs with a 307 to the registry itself
    proxy.blob_gets[digest]       # GETs of a blob that reached the proxy
    proxy.manifest_gets[ref]      # GETs of a manifest (by tag or digest) that reached the proxy
    proxy.authorized[path]        # requests that came with an Authorization header, by path
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RegistryProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.tamper: set[str] = set()
        self.stall: set[str] = set()
        self.redirect = False
        self.blob_gets: Counter[str] = Counter()
        self.manifest_gets: Counter[str] = Counter()
        self.authorized: Counter[str] = Counter()
        self._stopped = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                proxy.handle(self, "GET")

            def do_HEAD(self) -> None:  # noqa: N802
                proxy.handle(self, "HEAD")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"http://{self.host}"

    def start(self) -> RegistryProxy:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        digest = h.path.split("/blobs/", 1)[1].split("?")[0] if "/blobs/" in h.path else ""
        if h.headers.get("Authorization"):
            self.authorized[h.path] += 1
        if "/manifests/" in h.path and method == "GET":
            self.manifest_gets[h.path.split("/manifests/", 1)[1]] += 1
        if digest and method == "GET":
            self.blob_gets[digest] += 1
            if self.redirect:
                h.send_response(307)
                h.send_header("Location", self.upstream + h.path)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "authorization")}
        req = urllib.request.Request(self.upstream + h.path, method=method, headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=30)
            status, body, rheaders = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, body, rheaders = exc.code, exc.read(), exc.headers
        if digest in self.tamper and body:
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        h.send_response(status)
        for key in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate", "Docker-Distribution-Api-Version"):
            if rheaders.get(key):
                h.send_header(key, rheaders[key])
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method == "HEAD":
            return
        if digest in self.stall:
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            while not self._stopped.wait(0.1):
                pass
            return
        h.wfile.write(body)

    def stop(self) -> None:
        self._stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()
