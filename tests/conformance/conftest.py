"""The conformance tier: critest v1.36 specs (same names), driven by an independent CRI client.

The client is the PyPI package container-runtime-interface-api (module cri_api.v1), which nobody
on this project wrote: if our proto drifted from the real API, these specs would fail on the wire.
This tier runs in its own pytest process (scripts/test) and must never import cri_shim.api.

Images are busybox-based stand-ins for critest's, served by a local registry that the daemon
uses as the mirror of registry.k8s.io, gcr.io, k8s.gcr.io and docker.io, so specs name images
exactly as critest does (tests/support/standin_images.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import Clients, Framework
from tests.support.standin_images import Published, mirrors, publish_standin_images
from tests.support.daemon import Daemon
from tests.support.leftovers import release_leftovers
from tests.support.registry import Registry

MAX_MESSAGE = 16 * 1024 * 1024
# Prints the effective uid: critest's nonewprivs image runs such a program installed setuid root.
NNP_SOURCE = '#include <stdio.h>\n#include <unistd.h>\nint main(void){printf("Effective uid: %d\\n",(int)geteuid());return 0;}\n'


def _nonewprivs_helper(workdir: Path) -> Path | None:
    """A static build of NNP_SOURCE, or None when no C compiler is installed."""
    if shutil.which("gcc") is None:
        return None
    source, binary = workdir / "nnp.c", workdir / "nnp"
    source.write_text(NNP_SOURCE)
    done = subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(source)], capture_output=True)
    return binary if done.returncode == 0 else None


@pytest.fixture(scope="session")
def registry() -> Iterator[tuple[Registry, Published]]:
    workdir = Path(tempfile.mkdtemp(prefix="critest-images-"))
    with Registry() as reg:
        published = publish_standin_images(reg, workdir, _nonewprivs_helper(workdir))
        shutil.rmtree(workdir, ignore_errors=True)
        yield reg, published


@pytest.fixture(scope="module")
def runtime_daemon(registry: tuple[Registry, Published]) -> Iterator[Daemon]:
    reg, _ = registry
    d = Daemon({"images": {"mirrors": mirrors(reg), "insecure_registries": [reg.host]}})
    d.start()
    yield d
    d.stop()
    release_leftovers(d)
    shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def channel(runtime_daemon: Daemon) -> Iterator[grpc.Channel]:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
    with grpc.insecure_channel(runtime_daemon.endpoint, options=options) as ch:
        yield ch


@pytest.fixture
def clients(channel: grpc.Channel) -> Clients:
    c = Clients.on(channel)
    # critest's client validates the connection with Version and ImageFsInfo before each spec.
    c.runtime.Version(cri.VersionRequest())
    c.image.ImageFsInfo(cri.ImageFsInfoRequest())
    return c


@pytest.fixture
def f(clients: Clients, registry: tuple[Registry, Published], runtime_daemon: Daemon) -> Iterator[Framework]:
    """critest's framework for one spec; its AfterEach removes what the spec made."""
    fw = Framework(clients, registry[1], runtime_daemon)
    yield fw
    fw.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A spec whose RPC the runtime does not serve (UNIMPLEMENTED) is reported as skipped with the
    RPC named, not as passed or failed: it did not run, and it runs as soon as the RPC exists."""
    outcome = yield
    report = outcome.get_result()
    exc = call.excinfo.value if call.excinfo is not None else None
    if report.failed and isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: the runtime does not serve this RPC yet: {exc.details()}")
