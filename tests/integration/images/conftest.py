"""Fixtures of the image tests: one registry with the test images for the session, a daemon
that may pull from it over plain http, and a client."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.images import Catalog, Pusher, publish_test_images
from tests.support.registry import Registry


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    with Registry() as reg:
        yield reg


@pytest.fixture(scope="session")
def catalog(registry: Registry) -> Iterator[Catalog]:
    work = Path(tempfile.mkdtemp(prefix="images-"))
    yield publish_test_images(Pusher(registry.url), registry.host, work)
    shutil.rmtree(work, ignore_errors=True)


def start_daemon(images: dict | None = None) -> Daemon:
    d = Daemon({"images": images or {}})
    d.start()
    return d


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


def store_leftovers(daemon: Daemon) -> list[str]:
    """Everything of image data in the daemon's store: records, layers, blobs, partial work."""
    root = daemon.dir / "state" / "images"
    found = []
    for sub in ("records", "layers", "blobs/sha256", "ingest"):
        d = root / sub
        found += [f"{sub}/{p.name}" for p in d.iterdir()] if d.exists() else []
    return found
