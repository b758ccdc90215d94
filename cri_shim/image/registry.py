"""A registry HTTP API v2 client: endpoints and mirrors, auth challenges, redirects, streaming.

Blocking (http.client), run in worker threads by the puller. A Transfer can be aborted from
the event loop: it shuts the socket down, so a read blocked on a stalled registry returns at
once and the pull can clean up. Credentials are sent only to the host they were meant for:
a redirect to another host (a blob CDN) goes without the Authorization header.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from cri_shim.config import ImagesConfig
from cri_shim.errors import CriError, DeadlineExceeded, Internal, NotFound, PermissionDenied, Unavailable
from cri_shim.image.auth import ANONYMOUS, Challenge, Credentials, parse_challenge

log = logging.getLogger("cri_shim.image.registry")

CHUNK = 256 * 1024
MAX_DOCUMENT = 8 * 1024 * 1024
MAX_REDIRECTS = 8
USER_AGENT = "cri-shim"


@dataclass(frozen=True)
class Endpoint:
    """Where a registry host is reached: a mirror (tried first) or the host itself."""

    url: str
    host: str
    mirror: bool = False

    def __str__(self) -> str:
        return self.url


def endpoints(cfg: ImagesConfig, domain: str) -> list[Endpoint]:
    """The mirrors configured for domain, in order, then the registry itself."""
    found = []
    for mirror in cfg.mirrors.get(domain, []):
        url = mirror.rstrip("/")
        if "://" not in url:
            scheme = "http" if url.split("/")[0] in cfg.insecure_registries else "https"
            url = f"{scheme}://{url}"
        found.append(Endpoint(url, domain, mirror=True))
    upstream = "registry-1.docker.io" if domain == "docker.io" else domain
    scheme = "http" if domain in cfg.insecure_registries else "https"
    found.append(Endpoint(f"{scheme}://{upstream}", domain))
    return found


@functools.cache
def _tls() -> ssl.SSLContext:
    """The default TLS context, made once for the process and only when an https endpoint is
    reached: loading the system's CA certificates takes 30-70 ms, which every pull (and every
    pull of a plain-http registry) paid when each Client made its own."""
    return ssl.create_default_context()


class Aborted(Exception):
    """The transfer was stopped from outside (client gone, deadline, no progress)."""


class Transfer:
    """The connections the worker threads of one pull use, abortable from another thread."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def use(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self.check()
            self._conns = [c for c in self._conns if c.sock is not None] + [conn]

    def check(self) -> None:
        if self.stopped.is_set():
            raise Aborted()

    def abort(self) -> None:
        with self._lock:
            self.stopped.set()
            for conn in self._conns:
                sock = conn.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


class Client:
    """One repository on one endpoint, with the credentials and tokens of one pull."""

    def __init__(self, endpoint: Endpoint, repository: str, creds: Credentials, timeout: float, transfer: Transfer) -> None:
        self.endpoint = endpoint
        self.repository = repository
        self.creds = creds
        self.timeout = timeout
        self.transfer = transfer
        self._authorization = ""

    # --- public calls -------------------------------------------------------------------------

    def manifest(self, reference: str, accept: str) -> tuple[bytes, str, str]:
        """(body, content type, Docker-Content-Digest header) of a manifest or index."""
        resp = self._get(f"/v2/{self.repository}/manifests/{reference}", {"Accept": accept}, f"manifest {reference}")
        try:
            body = self._read_all(resp, MAX_DOCUMENT, f"manifest {reference}")
            return body, resp.getheader("Content-Type", ""), resp.getheader("Docker-Content-Digest", "")
        finally:
            resp.close()

    def blob(self, digest: str, sink: Callable[[bytes], None], transfer: Transfer | None = None) -> None:
        """Streams a blob into sink, chunk by chunk (verification is the sink's job), on the
        given transfer (so one download can be stopped alone) or the client's."""
        transfer = transfer or self.transfer
        resp = self._get(f"/v2/{self.repository}/blobs/{digest}", {}, f"blob {digest}", transfer)
        try:
            while True:
                transfer.check()
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                sink(chunk)
        except TimeoutError:
            transfer.check()
            raise self._stalled(f"blob {digest}") from None
        except (OSError, http.client.HTTPException) as exc:
            transfer.check()
            raise Unavailable(f"{self.endpoint}: reading blob {digest} failed: {exc}") from None
        finally:
            resp.close()

    # --- HTTP with auth and redirects ---------------------------------------------------------

    def _get(self, path: str, headers: dict[str, str], what: str, transfer: Transfer | None = None) -> http.client.HTTPResponse:
        url = self.endpoint.url + path
        transfer = transfer or self.transfer
        resp = self._request(url, headers, what, transfer)
        if resp.status == 401:
            challenge = parse_challenge(resp.getheader("WWW-Authenticate", ""))
            resp.close()
            self._authorize(challenge, what)
            resp = self._request(url, headers, what, transfer)
        if resp.status == 200:
            return resp
        body = self._read_all(resp, 64 * 1024, what, allow_short=True)
        resp.close()
        raise self._error(resp.status, body, what)

    def _request(self, url: str, headers: dict[str, str], what: str, transfer: Transfer) -> http.client.HTTPResponse:
        origin = urllib.parse.urlsplit(self.endpoint.url).netloc
        for _ in range(MAX_REDIRECTS):
            parts = urllib.parse.urlsplit(url)
            send = {"User-Agent": USER_AGENT, **headers}
            if self._authorization and parts.netloc == origin:
                send["Authorization"] = self._authorization
            resp = self._open("GET", parts, send, None, what, transfer)
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location", "")
                resp.close()
                if not location:
                    raise Unavailable(f"{what}: {parts.netloc} redirected without a Location")
                url = urllib.parse.urljoin(url, location)
                continue
            return resp
        raise Unavailable(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _open(self, method: str, parts: urllib.parse.SplitResult, headers: dict[str, str], body: bytes | None,
              what: str, transfer: Transfer | None = None) -> http.client.HTTPResponse:
        transfer = transfer or self.transfer
        transfer.check()
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.netloc, timeout=self.timeout, context=_tls())
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
        else:
            raise Unavailable(f"{what}: unsupported URL scheme {parts.scheme!r}")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            # Connected before registering, so that an abort racing with us always finds a socket.
            conn.connect()
            transfer.use(conn)
            conn.request(method, target, body=body, headers=headers)
            return conn.getresponse()
        except Aborted:
            conn.close()
            raise
        except TimeoutError:
            conn.close()
            transfer.check()
            raise self._stalled(what) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            transfer.check()
            raise Unavailable(f"{what}: cannot reach {parts.scheme}://{parts.netloc}: {exc}") from None

    def _stalled(self, what: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"{what} from {self.endpoint}: no progress for {self.timeout:g} s "
                                "(images.pull_progress_timeout_seconds)")

    def _read_all(self, resp: http.client.HTTPResponse, limit: int, what: str, allow_short: bool = False) -> bytes:
        try:
            data = resp.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.transfer.check()
            raise Unavailable(f"{what}: reading the response failed: {exc}") from None
        if len(data) > limit:
            if allow_short:
                return data[:limit]
            raise Internal(f"{what}: larger than {limit} bytes, refused")
        return data

    def _authorize(self, challenge: Challenge | None, what: str) -> None:
        if challenge is None:
            raise PermissionDenied(f"{what}: {self.endpoint} answered 401 without an auth challenge")
        if challenge.scheme == "basic":
            if not (self.creds.username or self.creds.password):
                raise PermissionDenied(f"{what}: {self.endpoint} requires credentials and none were given")
            self._authorization = self.creds.basic()
        elif challenge.scheme == "bearer":
            self._authorization = "Bearer " + self._token(challenge, what)
        else:
            raise PermissionDenied(f"{what}: unsupported auth scheme {challenge.scheme!r} from {self.endpoint}")

    def _token(self, challenge: Challenge, what: str) -> str:
        if self.creds.registry_token:
            return self.creds.registry_token
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise PermissionDenied(f"{what}: bearer challenge from {self.endpoint} has no usable realm")
        scope = challenge.params.get("scope") or f"repository:{self.repository}:pull"
        service = challenge.params.get("service", "")
        query = {"scope": scope, **({"service": service} if service else {})}
        headers = {"User-Agent": USER_AGENT}
        body = None
        method = "GET"
        if self.creds.identity_token:
            method = "POST"
            form = {**query, "grant_type": "refresh_token", "refresh_token": self.creds.identity_token, "client_id": USER_AGENT}
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            url = realm
        else:
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
            if self.creds is not ANONYMOUS and (self.creds.username or self.creds.password):
                headers["Authorization"] = self.creds.basic()
        resp = self._open(method, urllib.parse.urlsplit(url), headers, body, f"token for {what}")
        data = self._read_all(resp, 1024 * 1024, f"token for {what}", allow_short=True)
        resp.close()
        if resp.status in (401, 403):
            raise PermissionDenied(f"{what}: token server {realm} refused the credentials ({resp.status}): {_message(data)}")
        if resp.status != 200:
            raise Unavailable(f"{what}: token server {realm} answered {resp.status}: {_message(data)}")
        try:
            token = json.loads(data).get("token") or json.loads(data).get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise Unavailable(f"{what}: token server {realm} returned no token")
        return str(token)

    def _error(self, status: int, body: bytes, what: str) -> CriError:
        message = _message(body)
        where = f"{self.endpoint}/{self.repository}"
        if status in (401, 403):
            return PermissionDenied(f"{what} of {where}: access denied ({status}): {message}")
        if status == 404:
            return NotFound(f"{what} of {where}: not found: {message}")
        if status == 429 or status >= 500:
            return Unavailable(f"{what} of {where}: registry answered {status}: {message}")
        return Internal(f"{what} of {where}: registry answered {status}: {message}")


def _message(body: bytes) -> str:
    """The registry's error text: the v2 errors list when present, else the body's start."""
    try:
        errors = json.loads(body).get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
        if text:
            return text
    except (ValueError, AttributeError):
        pass
    return body[:200].decode(errors="replace").strip() or "(no message)"
