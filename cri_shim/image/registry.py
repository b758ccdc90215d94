"""A registry HTTP API v2 client: endpoints and mirrors, auth challenges, redirects, streaming.

Blocking (http.client), run in worker threads by the puller. A Transfer can be aborted from
the event loop: it shuts the socket down, so a read blocked on a stalled registry returns at
once and the pull can clean up. Credentials are sent only to the origin they were meant for:
a redirect to another host (a blob CDN) or scheme goes without the Authorization header. A
mirror URL's path means what its host's path_style says (Endpoint.api). Connections come from
a pool shared by all pulls (cri_shim/image/connection.py), bearer tokens from a cache shared
the same way (cri_shim/image/tokens.py).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cri_shim.config import ImagesConfig
from cri_shim.errors import CriError, DeadlineExceeded, FailedPrecondition, Internal, NotFound, PermissionDenied, Unavailable
from cri_shim.image.auth import ANONYMOUS, Challenge, Credentials, parse_challenge
from cri_shim.image.connection import Connection, Origin, Pool, Response
from cri_shim.image.hosts import TlsContexts, settings_of
from cri_shim.image.proxy import ProxyError, ProxySettings
from cri_shim.image.tokens import TokenCache, key_of

log = logging.getLogger("cri_shim.image.registry")

CHUNK = 256 * 1024
MAX_DOCUMENT = 8 * 1024 * 1024
MAX_REDIRECTS = 8
MAX_ERROR_BODY = 64 * 1024
MAX_TOKEN_BODY = 1024 * 1024
USER_AGENT = "cri-shim"


@dataclass(frozen=True)
class Endpoint:
    """Where a registry host is reached: a mirror (tried first) or the host itself."""

    url: str
    host: str
    mirror: bool = False
    path_style: str = "prefix"
    upstream_credentials: bool = False

    def __str__(self) -> str:
        return self.url

    def api(self, repository: str) -> tuple[str, str]:
        """(URL that /manifests/... and /blobs/... follow, the repository's name there)."""
        parts = urllib.parse.urlsplit(self.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        path = parts.path.strip("/")
        if not path:
            return f"{origin}/v2/{repository}", repository
        if self.path_style == "override":
            name = path[3:] + "/" + repository if path.startswith("v2/") else repository
            return f"{origin}/{path}/{repository}", name
        if self.path_style == "namespace":
            return f"{origin}/v2/{path}/{repository}", f"{path}/{repository}"
        return f"{origin}/{path}/v2/{repository}", repository


def endpoints(cfg: ImagesConfig, domain: str) -> list[Endpoint]:
    """The mirrors configured for domain, in order, then the registry itself."""
    found = []
    for mirror in cfg.mirrors.get(domain, []):
        url = mirror.rstrip("/")
        if "://" not in url:
            scheme = "http" if url.split("/")[0] in cfg.insecure_registries else "https"
            url = f"{scheme}://{url}"
        parts = urllib.parse.urlsplit(url)
        try:
            settings = settings_of(cfg, parts.hostname or "", parts.port)
        except ValueError:
            raise FailedPrecondition(f"images.mirrors.{domain}: {mirror!r} is not a URL") from None
        found.append(Endpoint(url, domain, True, settings.path_style, settings.upstream_credentials))
    upstream = "registry-1.docker.io" if domain == "docker.io" else domain
    scheme = "http" if domain in cfg.insecure_registries else "https"
    found.append(Endpoint(f"{scheme}://{upstream}", domain))
    return found


class Registries:
    """What the pulls of the daemon share: the connection pool (through the proxies of the
    daemon's environment, with each host's TLS settings) and the bearer tokens."""

    def __init__(self, cfg: ImagesConfig, environ: Mapping[str, str]) -> None:
        self.pool = Pool(ProxySettings.from_environ(environ), TlsContexts(cfg).tls)
        self.tokens = TokenCache()


class Aborted(Exception):
    """The transfer was stopped from outside (client gone, deadline, no progress)."""


class Transfer:
    """The connections the worker threads of one pull use, abortable from another thread."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._conns: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def use(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self.check()
            self._conns.add(conn)

    def release(self, conn: http.client.HTTPConnection) -> None:
        """The connection is done with (closed, or back in the pool): an abort leaves it be."""
        with self._lock:
            self._conns.discard(conn)

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
    """One repository on one endpoint, with the credentials of one pull."""

    def __init__(self, endpoint: Endpoint, repository: str, creds: Credentials, timeout: float, transfer: Transfer,
                 registries: Registries) -> None:
        self.endpoint = endpoint
        self.base, self.repository = endpoint.api(repository)
        self.origin = _origin(urllib.parse.urlsplit(self.base), str(endpoint))
        self.creds = creds
        self.timeout = timeout
        self.transfer = transfer
        self.registries = registries
        # A live token this repository was last pulled with by the same caller: no 401 first.
        cached = registries.tokens.for_base(self.base, creds)
        self._authorization = f"Bearer {cached}" if cached else ""

    # --- public calls -------------------------------------------------------------------------

    def manifest(self, reference: str, accept: str) -> tuple[bytes, str, str]:
        """(body, content type, Docker-Content-Digest header) of a manifest or index."""
        resp = self._get(f"/manifests/{reference}", {"Accept": accept}, f"manifest {reference}")
        body = self._read_all(resp, MAX_DOCUMENT, f"manifest {reference}")
        return body, resp.getheader("Content-Type", ""), resp.getheader("Docker-Content-Digest", "")

    def blob(self, digest: str, sink: Callable[[bytes], None], transfer: Transfer | None = None) -> None:
        """Streams a blob into sink, chunk by chunk (verification is the sink's job), on the
        given transfer (so one download can be stopped alone) or the client's."""
        transfer = transfer or self.transfer
        resp = self._get(f"/blobs/{digest}", {}, f"blob {digest}", transfer)
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
            self._finish(resp, transfer)

    # --- HTTP with auth and redirects ---------------------------------------------------------

    def _get(self, path: str, headers: dict[str, str], what: str, transfer: Transfer | None = None) -> Response:
        url = self.base + path
        transfer = transfer or self.transfer
        resp = self._request(url, headers, what, transfer)
        if resp.status == 401:
            challenge = parse_challenge(resp.getheader("WWW-Authenticate", ""))
            self._drain(resp, transfer)
            self._authorize(challenge, what, stale=self._authorization)
            resp = self._request(url, headers, what, transfer)
        if resp.status == 200:
            return resp
        body = self._read_all(resp, MAX_ERROR_BODY, what, allow_short=True, transfer=transfer)
        raise self._error(resp, body, what)

    def _request(self, url: str, headers: dict[str, str], what: str, transfer: Transfer) -> Response:
        for _ in range(MAX_REDIRECTS):
            parts = urllib.parse.urlsplit(url)
            send = {"User-Agent": USER_AGENT, **headers}
            # Credentials only to the endpoint itself: not to a blob CDN it redirects to, nor to
            # the same host over another scheme.
            if self._authorization and _origin(parts, what) == self.origin:
                send["Authorization"] = self._authorization
            resp = self._open("GET", parts, send, None, what, transfer)
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location", "")
                self._drain(resp, transfer)
                if not location:
                    raise Unavailable(f"{what}: {parts.netloc} redirected without a Location")
                url = urllib.parse.urljoin(url, location)
                continue
            return resp
        raise Unavailable(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _open(self, method: str, parts: urllib.parse.SplitResult, headers: dict[str, str], body: bytes | None,
              what: str, transfer: Transfer | None = None) -> Response:
        """Sends one request on a pooled connection to its origin (a fresh one if the pooled
        one turns out closed by the server meanwhile) and returns the response head."""
        transfer = transfer or self.transfer
        origin = _origin(parts, what)
        for attempt in range(2):
            transfer.check()
            try:
                conn, reused = self.registries.pool.get(origin, self.timeout)
            except ProxyError as exc:
                raise FailedPrecondition(f"{what}: {exc}") from None
            except ValueError as exc:
                raise Unavailable(f"{what}: {exc}") from None
            via = f" through proxy {conn.proxy}" if conn.proxy else ""
            try:
                if not reused:
                    # Connected before registering, so that an abort racing with us always finds a socket.
                    conn.connect()
                transfer.use(conn)
                conn.request(method, conn.target(parts), body=body, headers={**headers, **conn.proxy_headers()})
                resp = conn.getresponse()
                assert isinstance(resp, Response)
                resp.connection = conn
            except Aborted:
                conn.close()
                raise
            except TimeoutError:
                self._discard(conn, transfer)
                transfer.check()
                raise self._stalled(what) from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._discard(conn, transfer)
                transfer.check()
                if reused and attempt == 0:
                    continue
                raise Unavailable(f"{what}: cannot reach {origin}{via}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._discard(conn, transfer)
                transfer.check()
                raise Unavailable(f"{what}: cannot reach {origin}{via}: {exc}") from None
            if resp.status == 407 and conn.proxy is not None:
                self._drain(resp, transfer)
                raise Unavailable(f"{what}: proxy {conn.proxy} demands authentication (407): credentials in the "
                                  "proxy URL missing or refused")
            return resp
        raise AssertionError("unreachable")

    def _discard(self, conn: Connection, transfer: Transfer) -> None:
        transfer.release(conn)
        conn.close()

    def _finish(self, resp: Response, transfer: Transfer) -> None:
        """Done with a response: its connection goes back to the pool if the response was read
        to its end and may be followed by another, else it is closed."""
        conn = resp.connection
        reusable = resp.isclosed() and not resp.will_close and not transfer.stopped.is_set()
        resp.close()
        if conn is None:
            return
        transfer.release(conn)
        if reusable and conn.sock is not None:
            self.registries.pool.put(conn)
        else:
            conn.close()

    def _drain(self, resp: Response, transfer: Transfer) -> None:
        """Reads (bounded) and drops a response's body, so that its connection can be reused."""
        try:
            resp.read(MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            pass
        self._finish(resp, transfer)

    def _stalled(self, what: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"{what} from {self.endpoint}: no progress for {self.timeout:g} s "
                                "(images.pull_progress_timeout_seconds)")

    def _read_all(self, resp: Response, limit: int, what: str, allow_short: bool = False,
                  transfer: Transfer | None = None) -> bytes:
        """The body of a response, at most limit bytes (more is refused, or cut when
        allow_short); the response is finished either way."""
        transfer = transfer or self.transfer
        try:
            data = resp.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            transfer.check()
            raise Unavailable(f"{what}: reading the response failed: {exc}") from None
        finally:
            self._finish(resp, transfer)
        if len(data) > limit:
            if allow_short:
                return data[:limit]
            raise Internal(f"{what}: larger than {limit} bytes, refused")
        return data

    def _authorize(self, challenge: Challenge | None, what: str, stale: str) -> None:
        """Authorization after a 401; stale is what was sent with the refused request (a
        cached token the registry no longer takes is then fetched anew, not reused)."""
        if challenge is None:
            raise PermissionDenied(f"{what}: {self.endpoint} answered 401 without an auth challenge")
        if challenge.scheme == "basic":
            if not (self.creds.username or self.creds.password):
                raise PermissionDenied(f"{what}: {self.endpoint} requires credentials and none were given")
            self._authorization = self.creds.basic()
        elif challenge.scheme == "bearer":
            self._authorization = "Bearer " + self._token(challenge, what, fresh=stale.startswith("Bearer "))
        else:
            raise PermissionDenied(f"{what}: unsupported auth scheme {challenge.scheme!r} from {self.endpoint}")

    def _token(self, challenge: Challenge, what: str, fresh: bool) -> str:
        if self.creds.registry_token:
            return self.creds.registry_token
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise PermissionDenied(f"{what}: bearer challenge from {self.endpoint} has no usable realm")
        scope = challenge.params.get("scope") or f"repository:{self.repository}:pull"
        service = challenge.params.get("service", "")
        key = key_of(challenge, scope, self.creds)
        tokens = self.registries.tokens
        if fresh:
            tokens.drop(key)
        else:
            cached = tokens.get(key)
            if cached:
                return cached
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
        data = self._read_all(resp, MAX_TOKEN_BODY, f"token for {what}", allow_short=True)
        if resp.status in (401, 403):
            raise PermissionDenied(f"{what}: token server {realm} refused the credentials ({resp.status}): {_message(data)}")
        if resp.status != 200:
            raise Unavailable(f"{what}: token server {realm} answered {resp.status}: {_message(data)}")
        try:
            answer = json.loads(data)
            token = answer.get("token") or answer.get("access_token")
            lifetime = answer.get("expires_in")
        except (ValueError, AttributeError):
            token, lifetime = None, None
        if not token or not isinstance(token, str):
            raise Unavailable(f"{what}: token server {realm} returned no token")
        tokens.put(key, token, float(lifetime) if isinstance(lifetime, (int, float)) else None, self.base)
        return token

    def _error(self, resp: Response, body: bytes, what: str) -> CriError:
        status = resp.status
        message = _message(body)
        via = resp.connection.proxy if resp.connection is not None else None
        where = f"{self.endpoint}/{self.repository}" + (f" (through proxy {via})" if via else "")
        if status in (401, 403):
            return PermissionDenied(f"{what} of {where}: access denied ({status}): {message}")
        if status == 404:
            return NotFound(f"{what} of {where}: not found: {message}")
        if status == 429 or status >= 500:
            return Unavailable(f"{what} of {where}: registry answered {status}: {message}")
        return Internal(f"{what} of {where}: registry answered {status}: {message}")


def _origin(parts: urllib.parse.SplitResult, what: str) -> Origin:
    try:
        return Origin.of(parts)
    except ValueError as exc:
        raise Unavailable(f"{what}: not a usable URL ({parts.scheme}://{parts.netloc[:100]}): {exc}") from None


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
