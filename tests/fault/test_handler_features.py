"""Runtime handler features come from the runtime itself: a handler whose `features` call fails
offers no recursive read-only mounts, and a create asking it for one is refused up front."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.faultbin import FaultyBinary
from tests.support.pods import changes, default_handler, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import Pulled, container_config, create, logged_pod, pulled_daemon, pulling_from

pytestmark = pytest.mark.fault

__all__ = ["pulled_daemon"]


@pytest.fixture
def featureless(tmp_path: Path) -> Iterator[FaultyBinary]:
    """runc behind a wrapper whose `runc features` fails, from the daemon's first call on."""
    wrapper = FaultyBinary(tmp_path, "runc")
    wrapper.inject("features", "fail")
    yield wrapper
    wrapper.kill_hung()


@pytest.fixture
def daemon_overrides(registry: Registry, featureless: FaultyBinary) -> dict[str, Any]:
    return pulling_from(registry, featureless=featureless)


def _features(cri: Cri) -> dict[str, bool]:
    handlers = cri.runtime.Status(api.StatusRequest()).runtime_handlers
    return {h.name: h.features.recursive_read_only_mounts for h in handlers}


def test_a_handler_that_cannot_list_its_features_offers_no_recursive_read_only_mounts(
        pulled: Pulled, tmp_path: Path, featureless: FaultyBinary) -> None:
    cri, daemon = pulled.cri, pulled.daemon
    assert "features" in featureless.calls()
    offered = _features(cri)
    # crun 1.8.1 has no `features` subcommand either (though it honours rro): it offers none.
    assert offered == {"": offered[default_handler(cri)], "runc": True, "crun": False, "featureless": False}
    pod = logged_pod(daemon, "norro")
    sid = run_pod(cri, pod, handler="featureless")
    before = snapshot(daemon)
    rro = api.Mount(container_path="/mnt", host_path=str(tmp_path), readonly=True, recursive_read_only=True)
    config = container_config("app", "true", image=pulled.image, mounts=[rro])
    with pytest.raises(grpc.RpcError) as refused:
        create(cri, sid, pod, config)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "recursive read-only" in (refused.value.details() or "")
    assert changes(before, snapshot(daemon)) == {}
    # Without the mount the same handler runs containers.
    del config.mounts[:]
    assert create(cri, sid, pod, config)
    remove_pod(cri, sid)
