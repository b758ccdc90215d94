"""Image references, IDs, users, credentials, challenges, endpoints and platform choice."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.config import ImagesConfig
from cri_shim.errors import InvalidArgument, Unimplemented
from cri_shim.image import auth, manifest
from cri_shim.image.imageconfig import parse as parse_config, user_identity
from cri_shim.image.layers import chain_ids
from cri_shim.image.records import lookup_key
from cri_shim.image.reference import parse
from cri_shim.image.registry import endpoints

pytestmark = pytest.mark.unit
D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text,expected", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("user/app:v1", "docker.io/user/app:v1"),
    ("index.docker.io/user/app", "docker.io/user/app:latest"),
    ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
    ("localhost/app", "localhost/app:latest"),
    ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
    (f"busybox:1.0@{D}", f"docker.io/library/busybox@{D}"),
])
def test_references_normalise_as_kubelet_does(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


@pytest.mark.parametrize("text", ["", " busybox", "Busybox", "busybox:", "busybox@sha256:123", "a//b", "busybox:-x", "-a/b"])
def test_invalid_references_say_so(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid image reference|must not be empty"):
        parse(text)


def test_lookup_keys_tell_ids_from_names() -> None:
    assert lookup_key(D) == (None, "ab" * 32)
    assert lookup_key("ab" * 32) == (None, "ab" * 32)
    assert lookup_key("sha256:abab") == (None, "abab")
    assert lookup_key("abab") == ("docker.io/library/abab:latest", "abab")  # a name first, then an ID prefix
    assert lookup_key("busybox") == ("docker.io/library/busybox:latest", None)


@pytest.mark.parametrize("user,expected", [("1003", (1003, "")), ("www-data", (None, "www-data")),
                                           ("1003:1004", (1003, "")), ("www-data:1004", (None, "www-data")),
                                           ("", (None, "")), ("0", (0, ""))])
def test_config_user_becomes_uid_or_username(user: str, expected: tuple) -> None:
    assert user_identity(user) == expected


def test_image_config_fields_and_bad_diff_ids() -> None:
    body = json.dumps({"config": {"Entrypoint": ["/e"], "Cmd": ["c"], "Env": ["A=1"], "WorkingDir": "/w", "User": "u",
                                  "StopSignal": "SIGINT", "Volumes": {"/v": {}}}, "rootfs": {"diff_ids": [D]}}).encode()
    cfg = parse_config(body)
    assert (cfg.entrypoint, cfg.cmd, cfg.env, cfg.working_dir, cfg.user, cfg.stop_signal, cfg.volumes, cfg.diff_ids) == (
        ["/e"], ["c"], ["A=1"], "/w", "u", "SIGINT", ["/v"], [D])
    with pytest.raises(InvalidArgument, match="diff_id"):
        parse_config(json.dumps({"rootfs": {"diff_ids": ["md5:00"]}}).encode())


def test_chain_ids_follow_the_oci_definition() -> None:
    import hashlib
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_credentials_from_the_request() -> None:
    assert not auth.from_request(api.AuthConfig())
    assert auth.from_request(api.AuthConfig(auth=base64.b64encode(b"u:p:x").decode())) == auth.Credentials("u", "p:x")
    assert auth.from_request(api.AuthConfig(registry_token="t")).registry_token == "t"
    with pytest.raises(InvalidArgument, match="base64"):
        auth.from_request(api.AuthConfig(auth="!!"))


def test_credentials_from_a_docker_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
        "registry.example.com": {"username": "u", "password": "p"},
        "token.example.com": {"identitytoken": "refresh"}}}))
    assert auth.from_auth_file(str(path), "docker.io") == auth.Credentials("hub", "pw")
    assert auth.from_auth_file(str(path), "registry.example.com") == auth.Credentials("u", "p")
    assert auth.from_auth_file(str(path), "token.example.com").identity_token == "refresh"
    assert not auth.from_auth_file(str(path), "other.example.com")
    assert not auth.from_auth_file(str(tmp_path / "absent.json"), "docker.io")


def test_challenges_are_parsed() -> None:
    c = auth.parse_challenge('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example.com/token", "service": "registry.example.com", "scope": "repository:a/b:pull,push"}
    assert auth.parse_challenge('Basic realm="x"') == auth.Challenge("basic", {"realm": "x"})
    assert auth.parse_challenge("") is None


def test_endpoints_put_mirrors_first_and_use_http_only_where_configured() -> None:
    cfg = ImagesConfig(mirrors={"registry.k8s.io": ["http://127.0.0.1:5000", "mirror.example.com"]},
                       insecure_registries=["local.example.com:5000"])
    assert [e.url for e in endpoints(cfg, "registry.k8s.io")] == [
        "http://127.0.0.1:5000", "https://mirror.example.com", "https://registry.k8s.io"]
    assert [e.url for e in endpoints(cfg, "docker.io")] == ["https://registry-1.docker.io"]
    assert [e.url for e in endpoints(cfg, "local.example.com:5000")] == ["http://local.example.com:5000"]


def desc(arch: str, variant: str = "", os: str = "linux") -> dict:
    platform = {"os": os, "architecture": arch, **({"variant": variant} if variant else {})}
    return {"mediaType": manifest.OCI_MANIFEST, "digest": "sha256:" + (arch + variant).encode().hex().ljust(64, "0")[:64],
            "size": 1, "platform": platform}


def test_platform_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    index = json.dumps({"manifests": [desc("amd64", os="windows"), desc("arm64", "v8"), desc("amd64"), desc("arm", "v7")]}).encode()
    entries = manifest.parse_index(index, "t")
    monkeypatch.setattr(manifest.platform, "machine", lambda: "x86_64")
    assert manifest.choose_platform(entries, "t").platform == {"os": "linux", "architecture": "amd64"}
    monkeypatch.setattr(manifest.platform, "machine", lambda: "aarch64")
    assert manifest.choose_platform(entries, "t").platform["architecture"] == "arm64"
    monkeypatch.setattr(manifest.platform, "machine", lambda: "s390x")
    with pytest.raises(InvalidArgument, match="no image for linux/s390x"):
        manifest.choose_platform(entries, "t")


def test_schema1_and_unknown_layers_are_refused_clearly() -> None:
    with pytest.raises(Unimplemented, match="schema 1"):
        manifest.media_type_of(json.dumps({"schemaVersion": 1}).encode(), "", "m")
    body = json.dumps({"config": {"digest": D, "size": 1}, "layers": [{"mediaType": "application/x-foo", "digest": D, "size": 1}]})
    with pytest.raises(Unimplemented, match="unsupported media type"):
        manifest.parse_manifest(body.encode(), manifest.OCI_MANIFEST, "m")
