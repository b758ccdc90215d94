"""Per-host registry settings ([images.hosts]): looked up by host; TLS trust and client certificates.

A host is looked up as "host:port", then "host". Its TLS context is made once, at the first
https request to it: the system's CAs plus the host's ca_file, its client certificate, and no
verification only where skip_verify says so. A file that cannot be loaded fails the pull with
FAILED_PRECONDITION naming the key, and is tried again at the next pull.
"""

from __future__ import annotations

import functools
import ssl
import threading

from cri_shim.config import ImagesConfig, RegistryHostConfig
from cri_shim.errors import FailedPrecondition
from cri_shim.image.connection import Origin

DEFAULT = RegistryHostConfig()


@functools.cache
def _system_tls() -> ssl.SSLContext:
    """The default TLS context, made once for the process and only when an https endpoint is
    reached: loading the system's CA certificates takes 30-70 ms, which every pull (and every
    pull of a plain-http registry) paid when each client made its own."""
    return ssl.create_default_context()


def key_of(cfg: ImagesConfig, host: str, port: int | None) -> str | None:
    """The [images.hosts] key that applies to host (and port), if any."""
    for key in ([f"{host}:{port}"] if port else []) + [host]:
        if key in cfg.hosts:
            return key
    return None


def settings_of(cfg: ImagesConfig, host: str, port: int | None) -> RegistryHostConfig:
    key = key_of(cfg, host, port)
    return cfg.hosts[key] if key is not None else DEFAULT


class TlsContexts:
    """The TLS contexts made from the [images.hosts] table, by host."""

    def __init__(self, cfg: ImagesConfig) -> None:
        self._cfg = cfg
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def tls(self, origin: Origin) -> ssl.SSLContext:
        """The TLS context for an https origin."""
        key = key_of(self._cfg, origin.host, origin.port)
        if key is None:
            return _system_tls()
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is None:
                ctx = self._contexts[key] = _context(key, self._cfg.hosts[key])
            return ctx


def _context(key: str, settings: RegistryHostConfig) -> ssl.SSLContext:
    where = f"images.hosts.{key}"
    if not (settings.ca_file or settings.client_cert or settings.skip_verify):
        return _system_tls()
    ctx = ssl.create_default_context()
    try:
        if settings.ca_file:
            ctx.load_verify_locations(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise FailedPrecondition(f"{where}.ca_file {settings.ca_file}: cannot load: {exc}") from None
    try:
        if settings.client_cert:
            ctx.load_cert_chain(settings.client_cert, settings.client_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise FailedPrecondition(f"{where}.client_cert {settings.client_cert}: cannot load with its key: {exc}") from None
    if settings.skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
