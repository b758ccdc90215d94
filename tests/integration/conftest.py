"""Fixtures of the integration tier: a client on our stubs for the daemon fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.client import Cri
from tests.support.daemon import Daemon


@pytest.fixture
def cri(daemon: Daemon) -> Iterator[Cri]:
    client = Cri(daemon.endpoint)
    yield client
    client.close()
