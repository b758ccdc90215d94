"""Fixtures every tier shares. Nothing here imports generated API code (see tests/support/daemon.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import HANDLER_ENV, Daemon, handler_under_test
from tests.support.images import Catalog, Pusher, publish_test_images
from tests.support.leftovers import release_leftovers
from tests.support.registry import Registry


def pytest_report_header(config: pytest.Config) -> str:
    return f"runtime handler: {handler_under_test() or 'the daemon default'} ({HANDLER_ENV})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration-like tiers need root and the private namespaces scripts/test provides."""
    for item in items:
        if any(item.get_closest_marker(m) for m in ("integration", "restart", "fault", "conformance", "guest")):
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root: run through scripts/test"))


@pytest.fixture
def daemon_overrides() -> dict[str, Any]:
    """Configuration the daemon fixture starts with; a module overrides this fixture to change it."""
    return {}


@pytest.fixture
def daemon(daemon_overrides: dict[str, Any]) -> Iterator[Daemon]:
    """A running cri-shim with its own directories, stopped and removed after the test."""
    d = Daemon(daemon_overrides)
    d.start()
    yield d
    d.stop()
    release_leftovers(d)
    shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture
def own_daemons() -> Iterator[list[Daemon]]:
    """Daemons a test makes itself (its own environment, a start expected to fail), stopped and
    removed after the test as the daemon fixture's is."""
    made: list[Daemon] = []
    yield made
    for d in made:
        d.stop()
        release_leftovers(d)
        shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """One real registry on loopback for the session (the conformance tier has its own)."""
    with Registry() as reg:
        yield reg


@pytest.fixture(scope="session")
def catalog(registry: Registry) -> Iterator[Catalog]:
    """The busybox-based test images, pushed to the session's registry."""
    work = Path(tempfile.mkdtemp(prefix="images-"))
    yield publish_test_images(Pusher(registry.url), registry.host, work)
    shutil.rmtree(work, ignore_errors=True)
