"""How pulls reach registries: proxies from the daemon's environment, mirrors with a path,
TLS per host, credential helpers, and tokens and connections reused between requests.

The registries are real docker-registry processes (one with TLS, made with a CA the test makes
with openssl) serving the session's test images; the proxy is the tests' own, counting what
passes. The name registry.test resolves only at the proxy (the test's namespace has no DNS), so
a pull of it that succeeds went through the proxy.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.images.conftest import pull, running_daemon, spec
from tests.integration.images.test_pull import wait_until_clean
from tests.support.client import api
from tests.support.forward_proxy import ForwardProxy
from tests.support.images import Catalog, Pusher
from tests.support.proxy import RegistryProxy
from tests.support.registry import Registry, ServerTls, free_port
from tests.support.tls import Pki

pytestmark = pytest.mark.integration

SIDE_ADDRESS = "192.0.2.10"  # TEST-NET-1, on the loopback device of the test's own namespace


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    work = Path(tempfile.mkdtemp(prefix="pki-"))
    yield Pki(work)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_registry(registry: Registry, catalog: Catalog, pki: Pki) -> Iterator[Registry]:
    """The session's images over https, on a certificate for 127.0.0.1 and registry.test."""
    cert, key = pki.issue("registry", ["IP:127.0.0.1", "DNS:registry.test"])
    with Registry(tls=ServerTls(cert, key, pki.ca), storage=registry.storage) as reg:
        yield reg


@pytest.fixture(scope="module")
def side_registry(registry: Registry, catalog: Catalog) -> Iterator[Registry]:
    """The session's images over http on an address that is not loopback (which is never proxied)."""
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], check=True, capture_output=True, text=True).stdout
    if f" {SIDE_ADDRESS}/" not in shown:
        subprocess.run(["ip", "addr", "add", f"{SIDE_ADDRESS}/32", "dev", "lo"], check=True)
    with Registry(storage=registry.storage, address=SIDE_ADDRESS) as reg:
        yield reg


def remove(client: object, name: str) -> None:
    client.image.RemoveImage(api.RemoveImageRequest(image=spec(name)))  # type: ignore[attr-defined]


# --- proxies -----------------------------------------------------------------------------------


def test_https_pull_goes_through_a_connect_tunnel_with_the_proxy_credentials(tls_registry: Registry, catalog: Catalog,
                                                                            pki: Pki) -> None:
    name = f"registry.test:{tls_registry.port}"
    proxy = ForwardProxy(names={"registry.test": "127.0.0.1"}, credentials=("proxyuser", "proxy pw")).start()
    env = {"HTTPS_PROXY": f"http://proxyuser:proxy%20pw@{proxy.host}", "NO_PROXY": "other.example"}
    try:
        with running_daemon({"hosts": {name: {"ca_file": str(pki.ca)}}}, env) as (_, client):
            assert pull(client, f"{name}/layered") == catalog.layered.id
            assert proxy.tunnels == {name: proxy.connections}
            assert proxy.refused == 0
            # Manifest, config and three layers (at most three at once) over at most three
            # tunnels; the next pull reuses them without a new CONNECT.
            assert 1 <= proxy.connections <= 3
            made = proxy.connections
            remove(client, f"{name}/layered")
            assert pull(client, f"{name}/layered") == catalog.layered.id
            assert proxy.connections == made
            # The proxy saw CONNECT heads only: the host name and its own credentials.
            assert all(head.startswith(f"CONNECT {name} ") for head in proxy.heads)
            assert not any("\r\nAuthorization:" in head for head in proxy.heads)
    finally:
        proxy.stop()


def test_http_pull_is_proxied_by_absolute_uri_on_kept_alive_connections(registry: Registry, catalog: Catalog) -> None:
    name = f"registry.test:{registry.port}"
    proxy = ForwardProxy(names={"registry.test": "127.0.0.1"}, credentials=("u", "p")).start()
    try:
        with running_daemon({"insecure_registries": [name]}, {"http_proxy": f"u:p@{proxy.host}"}) as (_, client):
            assert pull(client, f"{name}/layered") == catalog.layered.id
            assert proxy.requests[f"http://{name}/v2/layered/manifests/latest"] == 1
            for layer in catalog.layered.layers:
                assert proxy.requests[f"http://{name}/v2/layered/blobs/{layer.digest}"] == 1
            assert all("\r\nProxy-Authorization: Basic " in head for head in proxy.heads)
            assert sum(proxy.requests.values()) == 5 and proxy.connections <= 3
    finally:
        proxy.stop()


@pytest.mark.parametrize("no_proxy", [SIDE_ADDRESS, "192.0.2.0/24", f"{SIDE_ADDRESS}:{{port}}", "*", f"x.example, {SIDE_ADDRESS}"])
def test_no_proxy_entries_go_direct(side_registry: Registry, catalog: Catalog, no_proxy: str) -> None:
    proxy = ForwardProxy().start()
    env = {"HTTP_PROXY": proxy.url, "NO_PROXY": no_proxy.format(port=side_registry.port)}
    try:
        with running_daemon({"insecure_registries": [side_registry.host]}, env) as (_, client):
            assert pull(client, f"{side_registry.host}/busybox") == catalog.busybox.id
        assert proxy.connections == 0
    finally:
        proxy.stop()


def test_a_no_proxy_entry_for_another_port_or_host_does_not_bypass(side_registry: Registry, catalog: Catalog) -> None:
    proxy = ForwardProxy().start()
    env = {"HTTP_PROXY": proxy.url, "no_proxy": f"{SIDE_ADDRESS}:1,192.0.3.0/24,.example"}
    try:
        with running_daemon({"insecure_registries": [side_registry.host]}, env) as (_, client):
            assert pull(client, f"{side_registry.host}/busybox") == catalog.busybox.id
        assert proxy.requests[f"http://{side_registry.host}/v2/busybox/manifests/latest"] == 1
    finally:
        proxy.stop()


@pytest.mark.parametrize("case", ["unreachable", "refused-credentials", "unsupported-scheme"])
def test_a_bad_proxy_is_a_clear_error_and_leaves_nothing(tls_registry: Registry, pki: Pki, case: str) -> None:
    proxy = ForwardProxy(names={"registry.test": "127.0.0.1"}, credentials=("u", "right")).start()
    name = f"registry.test:{tls_registry.port}"
    url = {"unreachable": f"http://u:right@127.0.0.1:{free_port()}", "refused-credentials": f"http://u:wrong@{proxy.host}",
           "unsupported-scheme": f"socks5://u:right@{proxy.host}"}[case]
    try:
        with running_daemon({"hosts": {name: {"ca_file": str(pki.ca)}}}, {"HTTPS_PROXY": url}) as (d, client):
            with pytest.raises(grpc.RpcError) as err:
                pull(client, f"{name}/busybox")
            code, details = err.value.code(), err.value.details()
            assert "right" not in details and "wrong" not in details
            if case == "unsupported-scheme":
                assert code == grpc.StatusCode.FAILED_PRECONDITION and "socks5" in details and "HTTPS_PROXY" in details
            else:
                assert code == grpc.StatusCode.UNAVAILABLE and "through proxy http://127.0.0.1:" in details
            if case == "refused-credentials":
                assert "407" in details and proxy.refused >= 1 and not proxy.tunnels
            assert wait_until_clean(d) == []
            assert client.image.ListImages(api.ListImagesRequest()).images == []
    finally:
        proxy.stop()


class EndlessHeaders:
    """A hostile proxy: answers any request with a status line and header lines without end."""

    def __init__(self, status: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.status = status
        self.sent = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.flood, args=(conn,), daemon=True).start()

    def flood(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(self.status + b"\r\n")
                while self.sent < 64 * 1024 * 1024:
                    conn.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
                    self.sent += 1012
            except OSError:
                return

    def stop(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_proxy_answering_with_endless_headers_is_cut_off(registry: Registry, tls_registry: Registry, pki: Pki,
                                                            scheme: str) -> None:
    hostile = EndlessHeaders(b"HTTP/1.1 200 OK")
    target = f"registry.test:{(tls_registry if scheme == 'https' else registry).port}"
    images = {"hosts": {target: {"ca_file": str(pki.ca)}}, "insecure_registries": [target] if scheme == "http" else []}
    try:
        with running_daemon(images, {f"{scheme.upper()}_PROXY": f"http://{hostile.host}"}) as (d, client):
            with pytest.raises(grpc.RpcError) as err:
                pull(client, f"{target}/busybox")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "through proxy" in err.value.details()
            assert wait_until_clean(d) == []
        assert hostile.sent < 8 * 1024 * 1024  # read no further than the bound, plus what the socket buffers held
    finally:
        hostile.stop()


# --- mirrors with a path -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced(registry: Registry, catalog: Catalog) -> str:
    """busybox also under mirror-ns/, where a path-style mirror finds it."""
    Pusher(registry.url).push(catalog.busybox, "mirror-ns/busybox", "latest")
    return "mirror-ns"


@pytest.mark.parametrize("style, path", [("override", "/v2/mirror-ns"), ("namespace", "/mirror-ns")])
def test_mirror_path_styles(registry: Registry, catalog: Catalog, namespaced: str, style: str, path: str) -> None:
    images = {"mirrors": {"registry.invalid": [f"http://{registry.host}{path}"]}, "hosts": {registry.host: {"path_style": style}}}
    with running_daemon(images) as (_, client):
        assert pull(client, "registry.invalid/busybox") == catalog.busybox.id


def test_mirror_path_is_a_prefix_by_default(registry: Registry, namespaced: str) -> None:
    with running_daemon({"mirrors": {"registry.invalid": [f"http://{registry.host}/{namespaced}"]}}) as (d, client):
        with pytest.raises(grpc.RpcError) as err:
            pull(client, "registry.invalid/busybox")
        assert f"http://{registry.host}/{namespaced}" in err.value.details()
        assert wait_until_clean(d) == []


# --- TLS per host ------------------------------------------------------------------------------


def test_a_host_ca_file_is_trusted_for_that_host_only(tls_registry: Registry, catalog: Catalog, pki: Pki) -> None:
    with running_daemon({}) as (_, client):
        with pytest.raises(grpc.RpcError) as err:
            pull(client, f"{tls_registry.host}/busybox")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "CERTIFICATE_VERIFY_FAILED" in err.value.details()
    with running_daemon({"hosts": {tls_registry.host: {"ca_file": str(pki.ca)}}}) as (_, client):
        assert pull(client, f"{tls_registry.host}/busybox") == catalog.busybox.id


def test_skip_verify_only_where_configured(registry: Registry, catalog: Catalog, tls_registry: Registry) -> None:
    with running_daemon({"hosts": {"other.example": {"skip_verify": True}}}) as (_, client):
        with pytest.raises(grpc.RpcError) as err:
            pull(client, f"{tls_registry.host}/busybox")
        assert "CERTIFICATE_VERIFY_FAILED" in err.value.details()
    with running_daemon({"hosts": {tls_registry.host: {"skip_verify": True}}}) as (_, client):
        assert pull(client, f"{tls_registry.host}/busybox") == catalog.busybox.id


def test_client_certificate(registry: Registry, catalog: Catalog, pki: Pki) -> None:
    cert, key = pki.issue("registry-mtls", ["IP:127.0.0.1"])
    node = pki.issue("node", [], client=True)
    with Registry(tls=ServerTls(cert, key, pki.ca, client_ca=pki.ca, client=node), storage=registry.storage) as reg:
        with running_daemon({"hosts": {reg.host: {"ca_file": str(pki.ca)}}}) as (d, client):
            with pytest.raises(grpc.RpcError) as err:
                pull(client, f"{reg.host}/busybox")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert wait_until_clean(d) == []
        settings = {"ca_file": str(pki.ca), "client_cert": str(node[0]), "client_key": str(node[1])}
        with running_daemon({"hosts": {reg.host: settings}}) as (_, client):
            assert pull(client, f"{reg.host}/busybox") == catalog.busybox.id
        with running_daemon({"hosts": {reg.host: {**settings, "client_key": "/nonexistent"}}}) as (_, client):
            with pytest.raises(grpc.RpcError) as err:
                pull(client, f"{reg.host}/busybox")
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "client_cert" in err.value.details()


# --- credential helpers ------------------------------------------------------------------------

HELPER = """#!/bin/sh
read -r server
echo "$server" >> {log}
if [ "$server" = "{host}" ]; then
    printf '{{"ServerURL": "%s", "Username": "alice", "Secret": "s3cret"}}' "$server"
    exit 0
fi
echo "credentials not found in native keychain"
exit 1
"""


@pytest.fixture
def helper_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="helpers-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_helper(where: Path, name: str, text: str) -> None:
    path = where / f"docker-credential-{name}"
    path.write_text(text)
    path.chmod(0o755)


@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_credential_helper_from_the_auth_file(catalog: Catalog, helper_dir: Path, key: str) -> None:
    with Registry(users={"alice": "s3cret"}, token=True) as reg:
        Pusher(reg.url, "alice", "s3cret").push(catalog.busybox, "private/busybox", "1")
        log = helper_dir / "asked"
        write_helper(helper_dir, "test", HELPER.format(log=log, host=reg.host))
        auth_file = helper_dir / "config.json"
        auth_file.write_text(json.dumps({"credHelpers": {reg.host: "test"}} if key == "credHelpers" else {"credsStore": "test"}))
        env = {"PATH": f"{helper_dir}:{os.environ['PATH']}"}
        with running_daemon({"insecure_registries": [reg.host], "auth_file": str(auth_file)}, env) as (_, client):
            assert pull(client, f"{reg.host}/private/busybox:1") == catalog.busybox.id
        assert log.read_text().split() == [reg.host]


def test_a_mirror_gets_the_registrys_credentials_only_where_configured(catalog: Catalog, helper_dir: Path) -> None:
    """The helper knows credentials for registry.invalid; the mirror (the registry itself) needs
    them, and gets them only with upstream_credentials."""
    with Registry(users={"alice": "s3cret"}, token=True) as reg:
        Pusher(reg.url, "alice", "s3cret").push(catalog.busybox, "busybox", "latest")
        log = helper_dir / "asked"
        write_helper(helper_dir, "test", HELPER.format(log=log, host="registry.invalid"))
        auth_file = helper_dir / "config.json"
        auth_file.write_text(json.dumps({"credsStore": "test"}))
        images = {"mirrors": {"registry.invalid": [f"http://{reg.host}"]}, "auth_file": str(auth_file)}
        env = {"PATH": f"{helper_dir}:{os.environ['PATH']}"}
        assert reg.token_server is not None
        pushed = reg.token_server.requests
        with running_daemon(images, env) as (d, client):
            with pytest.raises(grpc.RpcError) as err:
                pull(client, "registry.invalid/busybox")
            assert f"http://{reg.host}" in err.value.details() and "s3cret" not in err.value.details()
            assert wait_until_clean(d) == []
        assert reg.token_server.requests == pushed + 1  # anonymous, refused
        with running_daemon({**images, "hosts": {reg.host: {"upstream_credentials": True}}}, env) as (_, client):
            assert pull(client, "registry.invalid/busybox") == catalog.busybox.id
        assert "registry.invalid" in log.read_text().split()


@pytest.mark.parametrize("helper", ["flood", "garbage", "missing"])
def test_a_hostile_or_missing_helper_is_a_clear_error(registry: Registry, helper_dir: Path, helper: str) -> None:
    write_helper(helper_dir, "flood", "#!/bin/sh\nhead -c 1000000 /dev/zero\n")
    write_helper(helper_dir, "garbage", "#!/bin/sh\necho not-json\n")
    auth_file = helper_dir / "config.json"
    auth_file.write_text(json.dumps({"credHelpers": {registry.host: helper}}))
    env = {"PATH": f"{helper_dir}:{os.environ['PATH']}"}
    with running_daemon({"insecure_registries": [registry.host], "auth_file": str(auth_file)}, env) as (d, client):
        with pytest.raises(grpc.RpcError) as err:
            pull(client, f"{registry.host}/busybox")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"docker-credential-{helper}" in err.value.details()
        assert wait_until_clean(d) == []


# --- redirects ---------------------------------------------------------------------------------


def test_credentials_do_not_follow_a_redirect_to_another_host(catalog: Catalog) -> None:
    """front answers blob GETs with a 307 to cdn (another origin); cdn relays to the registry.
    The credentials reach the registry through front, never cdn, so the blobs are refused."""
    with Registry(users={"alice": "s3cret"}) as reg:
        Pusher(reg.url, "alice", "s3cret").push(catalog.busybox, "busybox", "latest")
        cdn = RegistryProxy(reg.url).start()
        front = RegistryProxy(cdn.url).start()
        front.redirect = True
        try:
            with running_daemon({"insecure_registries": [front.host]}) as (d, client):
                with pytest.raises(grpc.RpcError) as err:
                    pull(client, f"{front.host}/busybox", auth=api.AuthConfig(username="alice", password="s3cret"))
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert wait_until_clean(d) == []
            assert front.authorized and front.blob_gets  # the manifest went with credentials
            blob_paths = [path for path in cdn.authorized if "/blobs/" in path]
            assert cdn.blob_gets and blob_paths == []
        finally:
            front.stop()
            cdn.stop()


# --- tokens ------------------------------------------------------------------------------------


def unauthorized(reg: Registry) -> int:
    """401 answers in the registry's access log."""
    return sum(1 for line in reg.log_path.read_text(errors="replace").splitlines() if '" 401 ' in line)


def test_bearer_tokens_are_reused_across_blobs_and_pulls(catalog: Catalog) -> None:
    with Registry(users={"alice": "s3cret", "bob": "pw"}, token=True) as reg:
        Pusher(reg.url, "alice", "s3cret").push(catalog.layered, "team/layered", "1")
        assert reg.token_server is not None
        pushed = reg.token_server.requests
        name = f"{reg.host}/team/layered:1"
        alice = api.AuthConfig(username="alice", password="s3cret")
        with running_daemon({"insecure_registries": [reg.host]}) as (_, client):
            assert pull(client, name, auth=alice) == catalog.layered.id
            assert reg.token_server.requests == pushed + 1
            challenged = unauthorized(reg)
            assert challenged >= 1  # the first pull met a challenge
            remove(client, name)
            assert pull(client, name, auth=alice) == catalog.layered.id
            assert reg.token_server.requests == pushed + 1
            assert unauthorized(reg) == challenged  # the live token went with the first request
            # Another caller never gets alice's token.
            remove(client, name)
            assert pull(client, name, auth=api.AuthConfig(username="bob", password="pw")) == catalog.layered.id
            assert reg.token_server.requests == pushed + 2
            remove(client, name)
            with pytest.raises(grpc.RpcError) as err:
                pull(client, name)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as err:
                pull(client, name, auth=api.AuthConfig(username="alice", password="wrong"))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_basic_credentials_in_the_auth_file_still_work(catalog: Catalog, helper_dir: Path) -> None:
    with Registry(users={"bob": "pw"}) as reg:
        Pusher(reg.url, "bob", "pw").push(catalog.busybox, "team/app", "1")
        auth_file = helper_dir / "config.json"
        auth_file.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(b"bob:pw").decode()}}}))
        with running_daemon({"insecure_registries": [reg.host], "auth_file": str(auth_file)}) as (_, client):
            assert pull(client, f"{reg.host}/team/app:1") == catalog.busybox.id
