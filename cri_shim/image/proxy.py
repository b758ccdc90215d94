"""Which HTTP proxy a registry request goes through: HTTPS_PROXY, HTTP_PROXY and NO_PROXY.

Read once from the daemon's environment (a systemd drop-in, as for containerd and CRI-O), with
the meaning Go's net/http gives them, which both of those use: the upper-case name wins over
the lower-case one; a proxy URL without a scheme is http; NO_PROXY is a comma-separated list of
`*` (no proxy at all), IP addresses, CIDR blocks, host names (`example.com` matches it and its
subdomains, `.example.com` and `*.example.com` only the subdomains), each optionally with
`:port`; localhost and loopback addresses are never proxied.
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Proxy:
    """An http:// proxy: where to connect and the Proxy-Authorization its URL carries, if any."""

    host: str
    port: int
    authorization: str = field(default="", repr=False)

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        # Never the credentials: this is what messages and logs show.
        return f"http://{self.netloc}"


class ProxyError(ValueError):
    """A proxy variable that cannot be used (bad URL, a scheme other than http)."""


def parse_proxy(value: str, name: str) -> Proxy:
    """A proxy from a variable's value (`http://user:pw@host:port`, or `host:port`)."""
    url = value.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ProxyError(f"{name}: not a proxy URL: {exc}") from None
    if parts.scheme != "http":
        raise ProxyError(f"{name}: proxy scheme {parts.scheme!r} is not supported (only http://)")
    if not parts.hostname:
        raise ProxyError(f"{name}: proxy URL names no host")
    authorization = ""
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return Proxy(parts.hostname, port or 80, authorization)


@dataclass(frozen=True)
class _Rule:
    """One NO_PROXY entry."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    domain: str = ""
    subdomains_only: bool = False
    port: int = 0

    def matches(self, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int) -> bool:
        if self.port and self.port != port:
            return False
        if self.network is not None:
            return ip is not None and ip in self.network
        if host == self.domain:
            return not self.subdomains_only
        return host.endswith("." + self.domain)


def _rule(entry: str) -> _Rule | None:
    try:
        return _Rule(network=ipaddress.ip_network(entry, strict=False))
    except ValueError:
        pass
    host, port = entry, 0
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 0
    elif entry.count(":") == 1:
        name, _, digits = entry.partition(":")
        if digits.isdigit():
            host, port = name, int(digits)
    try:
        return _Rule(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    subdomains_only = host.startswith((".", "*."))
    domain = host.lstrip("*").lstrip(".").rstrip(".")
    return _Rule(domain=domain, subdomains_only=subdomains_only, port=port) if domain else None


@dataclass(frozen=True)
class ProxySettings:
    """The proxies of the daemon's environment and the hosts that bypass them."""

    https: Proxy | None = None
    http: Proxy | None = None
    bypass_all: bool = False
    rules: tuple[_Rule, ...] = ()
    problem: str = ""

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> ProxySettings:
        """The settings of env; a proxy URL that cannot be used fails every request (as Go's
        ProxyFromEnvironment does) rather than the daemon's start, with a message naming it."""
        try:
            return cls._parse(env)
        except ProxyError as exc:
            return cls(problem=str(exc))

    @classmethod
    def _parse(cls, env: Mapping[str, str]) -> ProxySettings:

        def var(name: str) -> tuple[str, str]:
            for key in (name, name.lower()):
                if env.get(key, "").strip():
                    return key, env[key]
            return name, ""

        proxies = {}
        for scheme in ("https", "http"):
            key, value = var(f"{scheme.upper()}_PROXY")
            proxies[scheme] = parse_proxy(value, key) if value else None
        _, no_proxy = var("NO_PROXY")
        entries = [e.strip().lower() for e in no_proxy.split(",") if e.strip()]
        rules = tuple(r for r in (_rule(e) for e in entries if e != "*") if r is not None)
        return cls(proxies["https"], proxies["http"], "*" in entries, rules)

    def for_url(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy a request to scheme://host:port goes through, or None to go direct."""
        if self.problem:
            raise ProxyError(self.problem)
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or self.bypass_all:
            return None
        host = host.lower().strip("[]").rstrip(".")
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if host == "localhost" or host.endswith(".localhost") or (ip is not None and ip.is_loopback):
            return None
        if any(rule.matches(host, ip, port) for rule in self.rules):
            return None
        return proxy
