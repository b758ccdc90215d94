"""The conformance tier: critest v1.36 specs (same names), driven by an independent CRI client.

The client is the PyPI package container-runtime-interface-api (module cri_api.v1), which nobody
on this project wrote: if our proto drifted from the real API, these specs would fail on the wire.
This tier runs in its own pytest process (scripts/test) and must never import cri_shim.api.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc

from tests.support.daemon import Daemon
from tests.support.leftovers import release_leftovers

MAX_MESSAGE = 16 * 1024 * 1024


@dataclass
class Clients:
    """The runtime and image services on one channel, as critest builds them for each spec."""

    runtime: cri_grpc.RuntimeServiceStub
    image: cri_grpc.ImageServiceStub


@pytest.fixture(scope="module")
def runtime_daemon() -> Iterator[Daemon]:
    d = Daemon()
    d.start()
    yield d
    d.stop()
    release_leftovers(d)
    shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture
def clients(runtime_daemon: Daemon) -> Iterator[Clients]:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
    with grpc.insecure_channel(runtime_daemon.endpoint, options=options) as channel:
        runtime = cri_grpc.RuntimeServiceStub(channel)
        image = cri_grpc.ImageServiceStub(channel)
        # critest's client validates the connection with Version and ImageFsInfo before each spec.
        runtime.Version(cri.VersionRequest())
        yield Clients(runtime=runtime, image=image)
