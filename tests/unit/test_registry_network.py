"""Proxy settings from the environment, NO_PROXY matching, mirror path styles, the token cache,
the [images.hosts] keys, credential helpers."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
import urllib.parse
from pathlib import Path

import pytest

from cri_shim.config import ConfigError, ImagesConfig, RegistryHostConfig, load
from cri_shim.errors import FailedPrecondition
from cri_shim.image import auth, credhelper
from cri_shim.image.auth import ANONYMOUS, Challenge, Credentials
from cri_shim.image.connection import IDLE_PER_ORIGIN, IDLE_SECONDS, IDLE_TOTAL, Connection, Origin, Pool
from cri_shim.image.proxy import Proxy, ProxyError, ProxySettings
from cri_shim.image.registry import Endpoint, endpoints
from cri_shim.image.tokens import TokenCache, key_of

pytestmark = pytest.mark.unit

PROXY = "http://proxy.example:3128"


@pytest.mark.parametrize("no_proxy, host, port, direct", [
    ("", "registry.example", 443, False),
    ("*", "registry.example", 443, True),
    ("registry.example", "registry.example", 443, True),
    ("registry.example", "a.registry.example", 443, True),
    ("registry.example", "xregistry.example", 443, False),
    (".registry.example", "registry.example", 443, False),
    (".registry.example", "a.registry.example", 443, True),
    ("*.registry.example", "a.b.registry.example", 443, True),
    ("Registry.Example.", "REGISTRY.example", 443, True),
    ("registry.example:5000", "registry.example", 5000, True),
    ("registry.example:5000", "registry.example", 443, False),
    ("10.1.2.3", "10.1.2.3", 443, True),
    ("10.1.2.3", "10.1.2.4", 443, False),
    ("10.0.0.0/8", "10.200.1.1", 443, True),
    ("10.0.0.0/8", "11.0.0.1", 443, False),
    ("10.0.0.0/8", "ten.example", 443, False),
    ("10.1.2.3:8443", "10.1.2.3", 8443, True),
    ("10.1.2.3:8443", "10.1.2.3", 443, False),
    ("fd00::/8", "fd00::5", 443, True),
    ("[fd00::5]:443", "fd00::5", 443, True),
    (" a.example , b.example ", "b.example", 443, True),
    ("a.example", "localhost", 443, True),       # never proxied
    ("", "127.0.0.5", 443, True),                # loopback: never proxied
    ("", "::1", 443, True),
])
def test_no_proxy(no_proxy: str, host: str, port: int, direct: bool) -> None:
    settings = ProxySettings.from_environ({"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy})
    assert (settings.for_url("https", host, port) is None) == direct


def test_upper_case_wins_and_each_scheme_has_its_own_proxy() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "http_proxy": "plain.example:3"}
    settings = ProxySettings.from_environ(env)
    assert settings.for_url("https", "r.example", 443) == Proxy("upper", 1)
    assert settings.for_url("http", "r.example", 80) == Proxy("plain.example", 3)
    assert ProxySettings.from_environ({"no_proxy": "*", "HTTP_PROXY": PROXY}).for_url("http", "r.example", 80) is None
    assert ProxySettings.from_environ({}).for_url("https", "r.example", 443) is None


def test_proxy_credentials_come_from_the_url_and_are_never_shown() -> None:
    proxy = ProxySettings.from_environ({"HTTPS_PROXY": "http://us%40er:p%3Ass@proxy.example:3128"}).https
    assert proxy is not None
    assert proxy.authorization == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert str(proxy) == "http://proxy.example:3128"
    assert "Basic" not in repr(proxy)
    assert "p:ss" not in repr(ProxySettings.from_environ({"HTTPS_PROXY": "socks5://u:p:ss@x:1"}))


@pytest.mark.parametrize("value, words", [("socks5://proxy.example:1080", "socks5"), ("https://proxy.example", "https"),
                                          ("http://proxy.example:notaport", "port"), ("http://:8080", "no host")])
def test_an_unusable_proxy_fails_requests_with_its_variable_named(value: str, words: str) -> None:
    settings = ProxySettings.from_environ({"HTTPS_PROXY": value})
    with pytest.raises(ProxyError) as err:
        settings.for_url("https", "r.example", 443)
    assert "HTTPS_PROXY" in str(err.value) and words in str(err.value)


def test_proxy_authorization_goes_to_the_proxy_only() -> None:
    proxy = Proxy("proxy.example", 3128, "Basic eA==")
    origin = Origin("http", "r.example", 80)
    through = Connection(origin, proxy, None, 5)
    parts = urllib.parse.urlsplit("http://r.example/v2/x/manifests/1?a=b")
    assert through.target(parts) == "http://r.example:80/v2/x/manifests/1?a=b"
    assert through.proxy_headers() == {"Proxy-Authorization": "Basic eA=="}
    direct = Connection(origin, None, None, 5)
    assert direct.target(parts) == "/v2/x/manifests/1?a=b" and direct.proxy_headers() == {}
    # https through a proxy: the credentials are in CONNECT only, never in the tunnelled request.
    tunnelled = Connection(Origin("https", "r.example", 443), proxy, ssl.create_default_context(), 5)
    assert tunnelled.proxy_headers() == {} and tunnelled.target(parts) == "/v2/x/manifests/1?a=b"


@pytest.mark.parametrize("url, style, base, name", [
    ("https://m.example", "override", "https://m.example/v2/lib/app", "lib/app"),
    ("https://m.example/registry.k8s.io", "prefix", "https://m.example/registry.k8s.io/v2/lib/app", "lib/app"),
    ("https://harbor.example/v2/k8s-proxy", "override", "https://harbor.example/v2/k8s-proxy/lib/app", "k8s-proxy/lib/app"),
    ("https://m.example/custom/api", "override", "https://m.example/custom/api/lib/app", "lib/app"),
    ("https://m.example/ns/sub", "namespace", "https://m.example/v2/ns/sub/lib/app", "ns/sub/lib/app"),
])
def test_mirror_path_styles(url: str, style: str, base: str, name: str) -> None:
    assert Endpoint(url, "registry.k8s.io", True, style).api("lib/app") == (base, name)


def test_the_host_table_gives_a_mirror_its_style_and_credentials_rule() -> None:
    cfg = ImagesConfig(mirrors={"registry.k8s.io": ["https://harbor.example/v2/k8s", "m.example:5000/ns"]},
                       hosts={"harbor.example": RegistryHostConfig(path_style="override", upstream_credentials=True),
                              "m.example:5000": RegistryHostConfig(path_style="namespace"),
                              "m.example": RegistryHostConfig(path_style="override")})
    harbor, ns, upstream = endpoints(cfg, "registry.k8s.io")
    assert (harbor.path_style, harbor.upstream_credentials) == ("override", True)
    assert (ns.path_style, ns.upstream_credentials, ns.url) == ("namespace", False, "https://m.example:5000/ns")
    assert (upstream.mirror, upstream.path_style) == (False, "prefix")


def test_hosts_keys_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[images.hosts."m.example"]\npath_style = "rewrite"\n')
    with pytest.raises(ConfigError, match="path_style"):
        load(path)
    path.write_text('[images.hosts."m.example"]\nclient_key = "/k"\n')
    with pytest.raises(ConfigError, match="client_cert"):
        load(path)
    path.write_text('[images.hosts."m.example"]\nskip_verify = true\nca_file = "/ca.pem"\n')
    assert load(path).images.hosts["m.example"] == RegistryHostConfig(ca_file="/ca.pem", skip_verify=True)


def test_tokens_are_kept_per_scope_and_caller_until_they_expire() -> None:
    cache = TokenCache()
    challenge = Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})
    alice = Credentials("alice", "pw")
    key = key_of(challenge, "repository:app:pull", alice)
    cache.put(key, "T1", 300, "https://r.example/v2/app")
    assert cache.get(key) == "T1"
    assert cache.for_base("https://r.example/v2/app", alice) == "T1"
    assert cache.for_base("https://r.example/v2/app", ANONYMOUS) is None
    assert cache.get(key_of(challenge, "repository:app:pull", Credentials("alice", "other"))) is None
    assert cache.get(key_of(challenge, "repository:other:pull", alice)) is None
    cache.drop(key)
    assert cache.get(key) is None and cache.for_base("https://r.example/v2/app", alice) is None
    cache.put(key, "T2", 0.05, "https://r.example/v2/app")
    time.sleep(0.1)
    assert cache.get(key) is None


def test_a_credential_helper_that_hangs_is_killed_with_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = tmp_path / "pids"
    helper = tmp_path / "docker-credential-sleepy"
    helper.write_text(f"#!/bin/sh\nsleep 60 &\necho $$ $! > {pids}\nwait\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(FailedPrecondition, match="did not answer within 0.5 s"):
        credhelper.get("sleepy", "registry.example", timeout=0.5)
    for pid in pids.read_text().split():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.parametrize("name", ["../x", "a b", "", "-rf"])
def test_a_credential_helper_name_is_a_plain_name(name: str) -> None:
    with pytest.raises(FailedPrecondition, match="plain name"):
        credhelper.get(name, "registry.example")


def test_a_helper_token_answer_is_an_identity_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "docker-credential-tok"
    helper.write_text('#!/bin/sh\ncat > /dev/null\necho \'{"ServerURL": "x", "Username": "<token>", "Secret": "refresh-1"}\'\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    auth_file = tmp_path / "config.json"
    auth_file.write_text('{"credHelpers": {"docker.io": "tok"}}')
    assert auth.from_auth_file(str(auth_file), "docker.io") == Credentials(identity_token="refresh-1")
    assert auth.from_auth_file(str(auth_file), "quay.io") == ANONYMOUS


def test_the_pool_keeps_a_bounded_number_of_idle_connections() -> None:
    listeners = [socket.create_server(("127.0.0.1", 0), backlog=16) for _ in range(IDLE_TOTAL // IDLE_PER_ORIGIN + 1)]
    origins = [Origin("http", "127.0.0.1", lst.getsockname()[1]) for lst in listeners]
    pool = Pool(ProxySettings(), lambda origin: ssl.create_default_context())

    def connected(origin: Origin) -> Connection:
        conn, reused = pool.get(origin, 5)
        assert not reused
        conn.connect()
        return conn

    try:
        first = [connected(origins[0]) for _ in range(IDLE_PER_ORIGIN + 2)]
        for conn in first:
            pool.put(conn)
        kept = [c for c in first if c.sock is not None]
        assert kept == first[-IDLE_PER_ORIGIN:]  # at most IDLE_PER_ORIGIN an origin: the oldest went
        again, reused = pool.get(origins[0], 5)
        assert reused and again is first[-1]
        pool.put(again)
        # Across origins at most IDLE_TOTAL: the longest idle go first.
        others = [connected(origin) for origin in origins[1:] for _ in range(IDLE_PER_ORIGIN)]
        for conn in others:
            pool.put(conn)
        alive = [c for c in first + others if c.sock is not None]
        assert len(alive) == IDLE_TOTAL and all(c.sock is None for c in kept)
        # Idle past IDLE_SECONDS: closed, and a new connection is made.
        for conn in alive:
            conn.idle_since -= IDLE_SECONDS + 1
        fresh, reused = pool.get(origins[-1], 5)
        assert not reused and all(c.sock is None for c in alive)
        fresh.close()
    finally:
        pool.close()
        for lst in listeners:
            lst.close()
