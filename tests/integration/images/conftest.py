"""Fixtures of the image tests: a daemon that may pull over plain http from the session's
registry of test images (tests/conftest.py), and a client."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.proxy import RegistryProxy
from tests.support.registry import Registry


def start_daemon(images: dict | None = None, env: dict[str, str] | None = None) -> Daemon:
    d = Daemon({"images": images or {}}, env=env)
    d.start()
    return d


@contextlib.contextmanager
def running_daemon(images: dict, env: dict[str, str] | None = None) -> Iterator[tuple[Daemon, Cri]]:
    """A daemon with this [images] configuration (and environment) and a client, both gone afterwards."""
    d = start_daemon(images, env)
    client = Cri(d.endpoint)
    try:
        yield d, client
    finally:
        client.close()
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


@contextlib.contextmanager
def behind_proxy(registry: Registry, images: Callable[[RegistryProxy], dict] | None = None,
                 ) -> Iterator[tuple[RegistryProxy, Daemon, Cri]]:
    """A proxy in front of the registry and a daemon pulling through it (plain http by default)."""
    proxy = RegistryProxy(registry.url).start()
    try:
        with running_daemon(images(proxy) if images else {"insecure_registries": [proxy.host]}) as (d, client):
            yield proxy, d, client
    finally:
        proxy.stop()


@pytest.fixture
def image_daemon(registry: Registry) -> Iterator[Daemon]:
    d = start_daemon({"insecure_registries": [registry.host]})
    yield d
    d.stop()
    shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture
def cri(image_daemon: Daemon) -> Iterator[Cri]:
    client = Cri(image_daemon.endpoint)
    yield client
    client.close()


def spec(image: str) -> api.ImageSpec:
    return api.ImageSpec(image=image)


def pull(cri: Cri, image: str, **kw: object) -> str:
    return cri.image.PullImage(api.PullImageRequest(image=spec(image), **kw)).image_ref


def status(cri: Cri, image: str) -> api.ImageStatusResponse:
    return cri.image.ImageStatus(api.ImageStatusRequest(image=spec(image)))


