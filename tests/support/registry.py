"""A real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1 for tests and benchmarks.

    with Registry() as reg:                       # anonymous
    with Registry(users={"u": "p"}) as reg:       # htpasswd basic auth
    with Registry(users={"u": "p"}, token=True):  # bearer tokens from a small token server
        reg.token_server.refresh_tokens      # identity tokens (OAuth2 refresh grant) by value
        reg.url -> "http://127.0.0.1:<port>", reg.host -> "127.0.0.1:<port>"
    with Registry(tls=ServerTls(cert, key, ca)):  # https (ca: the CA to trust; client_ca: demand client certificates)
    with Registry(storage=other.storage):         # serves what another registry holds
    with Registry(address="192.0.2.10"):          # on another address of the test's own netns

Each instance has its own temp dir (storage, config, htpasswd, signing key), a free port,
and is stopped by its PID. Usable from a plain script: nothing here needs pytest.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BINARY = "/usr/bin/docker-registry"
SERVICE = "cri-shim-test-registry"
ISSUER = "cri-shim-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _bcrypt(password: str) -> str:
    """A bcrypt hash for the registry's htpasswd file (the only kind distribution accepts), from
    libxcrypt through ctypes: Python 3.13 has no crypt module, and libcrypt.so.1 is in every Debian
    base system (the guest's trixie as this host's bookworm)."""
    libcrypt = ctypes.CDLL("libcrypt.so.1", use_errno=True)
    libcrypt.crypt_gensalt.restype = libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    # No random bytes given: libxcrypt takes them from the kernel. Cost 0: the library's default.
    setting = libcrypt.crypt_gensalt(b"$2b$", 0, None, 0)
    hashed = libcrypt.crypt(password.encode(), setting) if setting else None
    if not hashed or not hashed.startswith(b"$2b$"):
        raise OSError(ctypes.get_errno(), "libcrypt made no bcrypt hash")
    return hashed.decode()


class TokenServer:
    """Issues registry bearer tokens (RS256 JWTs with the signing cert in x5c) to known users."""

    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        self.users = users
        # Identity (refresh) tokens the server accepts, one a user, as a registry login would hand out.
        self.refresh_tokens = {f"refresh-{uuid.uuid4().hex}": user for user in users}
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out", str(self.cert),
             "-days", "2", "-subj", "/CN=cri-shim-test-token"],
            check=True, capture_output=True,
        )
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests += 1
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = server.check(self.headers.get("Authorization", ""))
                if user is None:
                    self.send_response(401)
                    self.end_headers()
                    self.wfile.write(b'{"details":"invalid credentials"}')
                    return
                self.reply({"token": server.token(user, query.get("scope", []), query.get("service", [SERVICE])[0])})

            def do_POST(self) -> None:  # noqa: N802 - OAuth2 refresh-token grant (docker's identity tokens)
                server.requests += 1
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode())
                user = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                if form.get("grant_type") != ["refresh_token"] or user is None:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.reply({"access_token": server.token(user, form.get("scope", []), form.get("service", [SERVICE])[0])})

            def reply(self, data: dict[str, str]) -> None:
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def check(self, header: str) -> str | None:
        """The user named by a Basic header with the right password; anonymous ("") is refused."""
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def token(self, user: str, scopes: list[str], service: str) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": user, "aud": service, "exp": now + 600, "nbf": now - 60, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                                   check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass(frozen=True)
class ServerTls:
    """The registry's certificate and key, the CA that signed them, and the CA its clients'
    certificates must chain to (none: no client certificate asked for)."""

    cert: Path
    key: Path
    ca: Path
    client_ca: Path | None = None
    client: tuple[Path, Path] | None = None  # what the readiness probe presents when client_ca is set


class Registry:
    """One docker-registry process on 127.0.0.1:<free port>, optionally with basic or token auth."""

    def __init__(self, users: dict[str, str] | None = None, token: bool = False, tls: ServerTls | None = None,
                 storage: Path | None = None, address: str = "127.0.0.1") -> None:
        self.users = users or {}
        self.dir = Path(tempfile.mkdtemp(prefix="registry-"))
        self.storage = storage or self.dir / "data"
        self.tls = tls
        self.port = free_port()
        self.host = f"{address}:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.log_path = self.dir / "registry.log"
        self.token_server: TokenServer | None = TokenServer(self.dir, self.users) if token else None
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log: {level: info, accesslog: {disabled: false}}",
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}, delete: {{enabled: true}}}}",
        ]
        tls = ""
        if self.tls is not None:
            clientcas = f", clientcas: ['{self.tls.client_ca}']" if self.tls.client_ca else ""
            tls = f", tls: {{certificate: '{self.tls.cert}', key: '{self.tls.key}'{clientcas}}}"
        lines.append(f"http: {{addr: '{self.host}', secret: '{uuid.uuid4().hex}'{tls}}}")
        if self.token_server is not None:
            lines.append(f"auth: {{token: {{realm: '{self.token_server.url}', service: {SERVICE}, issuer: {ISSUER}, "
                         f"rootcertbundle: '{self.token_server.cert}'}}}}")
        elif self.users:
            htpasswd = self.dir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in self.users.items()))
            lines.append(f"auth: {{htpasswd: {{realm: cri-shim-test, path: '{htpasswd}'}}}}")
        return "\n".join(lines) + "\n"

    def start(self) -> Registry:
        path = self.dir / "config.yml"
        path.write_text(self.config())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BINARY, "serve", str(path)], stdout=log, stderr=log, start_new_session=True)
        log.close()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            if self.tls.client:
                context.load_cert_chain(*map(str, self.tls.client))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/v2/", timeout=1, context=context).close()
                return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"docker-registry not ready: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.token_server is not None:
            self.token_server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
