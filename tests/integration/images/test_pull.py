"""PullImage against a real registry: tags, digests, indexes, mirrors, auth, redirects, failures."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from tests.integration.images.conftest import behind_proxy, pull, running_daemon, spec, status
from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.images import Catalog, Image, Pusher, busybox_layers, build_image, store_leftovers, tar_layer
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


def wait_until_clean(daemon: Daemon) -> list[str]:
    """The store's leftovers once cleanup had a chance to finish (bounded wait, not a timing check)."""
    deadline = time.monotonic() + 20
    while store_leftovers(daemon) and time.monotonic() < deadline:
        time.sleep(0.1)
    return store_leftovers(daemon)


def test_pull_by_tag_returns_the_config_digest_everywhere(cri: Cri, catalog: Catalog) -> None:
    ref = pull(cri, f"{catalog.host}/busybox")
    assert ref == catalog.busybox.id
    image = status(cri, ref).image
    assert image.id == ref
    assert list(image.repo_tags) == [catalog.ref("busybox")]  # :latest appended
    assert list(image.repo_digests) == [f"{catalog.host}/busybox@{catalog.busybox.digest}"]
    assert image.size == len(catalog.busybox.config) + sum(len(layer.blob) for layer in catalog.busybox.layers)
    listed = cri.image.ListImages(api.ListImagesRequest()).images
    assert [i.id for i in listed] == [ref]


def test_pull_by_digest_gives_no_tag(cri: Cri, catalog: Catalog) -> None:
    name = f"{catalog.host}/digest-only@{catalog.by_digest.digest}"
    ref = pull(cri, name)
    image = status(cri, name).image
    assert ref == image.id == catalog.by_digest.id
    assert list(image.repo_tags) == [] and list(image.repo_digests) == [name]


def test_pull_through_an_index_picks_this_machine(cri: Cri, catalog: Catalog) -> None:
    ref = pull(cri, catalog.ref("multiarch"))
    assert ref == catalog.index_images[0].id  # amd64
    assert list(status(cri, ref).image.repo_digests) == [f"{catalog.host}/multiarch@{catalog.index_digest}"]


def test_three_layer_image_has_its_layers_in_verbose_status(cri: Cri, catalog: Catalog) -> None:
    ref = pull(cri, catalog.ref("layered"))
    answer = cri.image.ImageStatus(api.ImageStatusRequest(image=spec(ref), verbose=True))
    info = json.loads(answer.info["info"])
    assert [layer["diffID"] for layer in info["layers"]] == [layer.diff_id for layer in catalog.layered.layers]
    assert info["config"]["config"]["Entrypoint"] == ["/bin/sh", "-c"]


def test_missing_image_and_tag_are_not_found_with_a_clear_message(cri: Cri, catalog: Catalog) -> None:
    for name in (f"{catalog.host}/no-such-image:latest", f"{catalog.host}/busybox:no-such-tag"):
        with pytest.raises(grpc.RpcError) as err:
            pull(cri, name)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "not found" in err.value.details() and name.split("/", 1)[1].split(":")[0] in err.value.details()


def test_invalid_reference_is_refused(cri: Cri) -> None:
    with pytest.raises(grpc.RpcError) as err:
        pull(cri, "UPPER/Case")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pull_through_a_mirror_keeps_the_repository_path(registry: Registry, catalog: Catalog) -> None:
    with behind_proxy(registry, lambda p: {"mirrors": {"registry.invalid": [p.url]}}) as (proxy, _, client):
        ref = pull(client, "registry.invalid/busybox:latest")
        assert ref == catalog.busybox.id
        assert list(status(client, ref).image.repo_tags) == ["registry.invalid/busybox:latest"]
        assert proxy.blob_gets[catalog.busybox.layers[0].digest] == 1


def test_blob_redirect_to_another_host_is_followed(registry: Registry, catalog: Catalog) -> None:
    with behind_proxy(registry) as (proxy, _, client):
        proxy.redirect = True
        assert pull(client, f"{proxy.host}/busybox") == catalog.busybox.id
        assert proxy.blob_gets[catalog.busybox.layers[0].digest] == 1


@pytest.mark.parametrize("what", ["layer", "config"])
def test_tampered_blob_is_refused_and_nothing_is_kept(registry: Registry, catalog: Catalog, what: str) -> None:
    target = catalog.busybox.layers[0].digest if what == "layer" else catalog.busybox.id
    with behind_proxy(registry) as (proxy, d, client):
        proxy.tamper.add(target)
        with pytest.raises(grpc.RpcError) as err:
            pull(client, f"{proxy.host}/busybox")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "hashes to" in err.value.details() and target in err.value.details()
        assert client.image.ListImages(api.ListImagesRequest()).images == []
        assert wait_until_clean(d) == []


def test_concurrent_pulls_share_one_download(registry: Registry, catalog: Catalog) -> None:
    with behind_proxy(registry) as (proxy, _, client):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            refs = list(pool.map(lambda _: pull(client, f"{proxy.host}/layered"), range(4)))
        assert set(refs) == {catalog.layered.id}
        for layer in catalog.layered.layers:
            assert proxy.blob_gets[layer.digest] == 1
        assert proxy.blob_gets[catalog.layered.id] == 1


def test_a_re_pull_asks_for_the_manifest_and_writes_nothing(registry: Registry, catalog: Catalog) -> None:
    """The tag may have moved, so the manifest is asked for again; what the store holds is not
    fetched again, and an image already holding every name is not rewritten."""
    with behind_proxy(registry) as (proxy, d, client):
        assert pull(client, f"{proxy.host}/layered") == catalog.layered.id
        store = d.dir / "state" / "images"
        written = {p: p.stat().st_mtime_ns for p in [store / "generation", *(store / "records").iterdir()]}
        blobs = +proxy.blob_gets
        assert pull(client, f"{proxy.host}/layered") == catalog.layered.id
        assert proxy.manifest_gets["latest"] == 2
        assert proxy.blob_gets == blobs
        assert {p: p.stat().st_mtime_ns for p in written} == written


def test_one_millisecond_deadline_is_deadline_exceeded(cri: Cri, image_daemon: Daemon, catalog: Catalog) -> None:
    with pytest.raises(grpc.RpcError) as err:
        cri.image.PullImage(api.PullImageRequest(image=spec(catalog.ref("layered"))), timeout=0.001)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until_clean(image_daemon) == []


def test_deadline_during_a_stalled_download_cleans_up(registry: Registry, catalog: Catalog) -> None:
    with behind_proxy(registry) as (proxy, d, client):
        proxy.stall.add(catalog.layered.layers[0].digest)
        with pytest.raises(grpc.RpcError) as err:
            client.image.PullImage(api.PullImageRequest(image=spec(f"{proxy.host}/layered")), timeout=3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert wait_until_clean(d) == []
        assert not status(client, f"{proxy.host}/layered").HasField("image")


def test_pull_without_progress_fails_after_the_progress_timeout(registry: Registry, catalog: Catalog) -> None:
    config = lambda p: {"insecure_registries": [p.host], "pull_progress_timeout_seconds": 1}  # noqa: E731
    with behind_proxy(registry, config) as (proxy, d, client):
        proxy.stall.add(catalog.busybox.layers[0].digest)
        with pytest.raises(grpc.RpcError) as err:
            pull(client, f"{proxy.host}/busybox")
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no progress" in err.value.details()
        assert wait_until_clean(d) == []
        assert '"pulling image"' in d.log_path.read_text()


@pytest.fixture(scope="module")
def small_image() -> Image:
    work = Path(tempfile.mkdtemp(prefix="img-"))
    image = build_image(busybox_layers(work, 1), {"Cmd": ["sh"]})
    shutil.rmtree(work, ignore_errors=True)
    return image


@pytest.mark.parametrize("token", [False, True], ids=["basic", "bearer"])
def test_pull_with_credentials(token: bool, small_image: Image) -> None:
    with Registry(users={"alice": "s3cret"}, token=token) as reg, running_daemon({"insecure_registries": [reg.host]}) as (_, client):
        Pusher(reg.url, "alice", "s3cret").push(small_image, "private/busybox", "v1")
        name = f"{reg.host}/private/busybox:v1"
        assert pull(client, name, auth=api.AuthConfig(username="alice", password="s3cret")) == small_image.id
        client.image.RemoveImage(api.RemoveImageRequest(image=spec(name)))
        encoded = api.AuthConfig(auth=base64.b64encode(b"alice:s3cret").decode())
        assert pull(client, name, auth=encoded) == small_image.id
        for auth in (api.AuthConfig(username="alice", password="wrong"), None):
            with pytest.raises(grpc.RpcError) as err:
                pull(client, name, **({"auth": auth} if auth else {}))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "s3cret" not in err.value.details()
            assert any(word in err.value.details() for word in ("credentials", "denied", "refused"))


def test_credentials_from_the_auth_file(small_image: Image) -> None:
    with Registry(users={"bob": "pw"}, token=True) as reg:
        Pusher(reg.url, "bob", "pw").push(small_image, "team/app", "1")
        auth_file = reg.dir / "config.json"
        auth_file.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(b"bob:pw").decode()}}}))
        with running_daemon({"insecure_registries": [reg.host], "auth_file": str(auth_file)}) as (_, client):
            assert pull(client, f"{reg.host}/team/app:1") == small_image.id


def test_hostile_layer_is_refused_through_pull_image(registry: Registry) -> None:
    escape = tarfile.TarInfo("../../../../tmp/escaped-by-layer")
    image = build_image([tar_layer([(escape, b"pwned")])], {"Cmd": ["sh"]})
    Pusher(registry.url).push(image, "hostile", "latest")
    with running_daemon({"insecure_registries": [registry.host]}) as (d, client):
        with pytest.raises(grpc.RpcError) as err:
            pull(client, f"{registry.host}/hostile")
        assert "climbs out of the layer" in err.value.details()
        assert not Path("/tmp/escaped-by-layer").exists()
        assert wait_until_clean(d) == []


def test_identity_and_registry_tokens(small_image: Image) -> None:
    with Registry(users={"carol": "pw"}, token=True) as reg, running_daemon({"insecure_registries": [reg.host]}) as (_, client):
        Pusher(reg.url, "carol", "pw").push(small_image, "tokens/app", "1")
        name = f"{reg.host}/tokens/app:1"
        assert reg.token_server is not None
        [identity] = reg.token_server.refresh_tokens
        assert pull(client, name, auth=api.AuthConfig(identity_token=identity)) == small_image.id
        client.image.RemoveImage(api.RemoveImageRequest(image=spec(name)))
        token = reg.token_server.token("carol", ["repository:tokens/app:pull"], "cri-shim-test-registry")
        assert pull(client, name, auth=api.AuthConfig(registry_token=token)) == small_image.id
        client.image.RemoveImage(api.RemoveImageRequest(image=spec(name)))
        with pytest.raises(grpc.RpcError) as err:
            pull(client, name, auth=api.AuthConfig(identity_token="refresh-unknown"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
