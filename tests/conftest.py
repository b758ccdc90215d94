"""Fixtures every tier shares. Nothing here imports generated API code (see tests/support/daemon.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support.daemon import Daemon
from tests.support.leftovers import release_leftovers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration-like tiers need root and the private namespaces scripts/test provides."""
    for item in items:
        if any(item.get_closest_marker(m) for m in ("integration", "restart", "fault", "conformance")):
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root: run through scripts/test"))


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A running cri-shim with its own directories, stopped and removed after the test."""
    d = Daemon()
    d.start()
    yield d
    d.stop()
    release_leftovers(d)
    shutil.rmtree(d.dir, ignore_errors=True)
