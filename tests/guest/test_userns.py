"""User namespaces on a real node (Debian 13's kernel, its state directory on the root disk's
ext4, as /var/lib/cri-shim is): the start-up probe decides, and what it decided holds. Where
user namespaces are offered a pod runs in one; where not, verbose Status says why and such a
pod is refused with FAILED_PRECONDITION, leaving nothing. Also: a handler self-check cut off
by its timeout under the systemd cgroup driver leaves no scope unit behind.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri_shim.runtime import handlers
from tests.guest.test_node import units
from tests.support.client import api
from tests.support.leftovers import kill_and_unmount
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.selfcheck import cut_off
from tests.support.workloads import Pulled, exec_sync, pulled_daemon, pulling_from, run_container
from tests.support.workloads import userns_container_config, userns_pod_config

pytestmark = pytest.mark.guest
pulled = pulled_daemon

HOST_ID = 1 << 20


@pytest.fixture
def var_lib() -> Iterator[Path]:
    """A state directory's parent on the node's root filesystem, beside /var/lib/cri-shim."""
    path = Path(tempfile.mkdtemp(prefix="cs", dir="/var/lib"))
    path.chmod(0o711)
    yield path
    kill_and_unmount([], path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon_overrides(registry: Registry, var_lib: Path) -> dict[str, Any]:
    return {**pulling_from(registry), "paths": {"state_dir": str(var_lib / "state")}}


def userns_answer(pulled: Pulled) -> dict[str, Any]:
    status = pulled.cri.runtime.Status(api.StatusRequest(verbose=True))
    found: dict[str, Any] = json.loads(status.info["userNamespaces"])
    offered = {h.name: h.features.user_namespaces for h in status.runtime_handlers}
    assert offered[""] == found["offered"], (offered, found)
    print(f"kernel {platform.release()}: user namespaces {found}")
    return found


def test_a_user_namespace_pod_runs_or_is_refused_with_the_reason(pulled: Pulled) -> None:
    cri, found = pulled.cri, userns_answer(pulled)
    pod = userns_pod_config(pulled.daemon, "userns", HOST_ID)
    if not found["offered"]:
        assert found["problem"]
        before = snapshot(pulled.daemon)
        with pytest.raises(grpc.RpcError) as err:
            run_pod(cri, pod)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        assert changes(before, snapshot(pulled.daemon)) == {}
        return
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, userns_container_config("app", HOST_ID, pulled.image))
    answer = exec_sync(cri, cid, "sh", "-c", "cat /proc/self/uid_map; id -u; echo x > /etc/written; stat -c %u /etc/written")
    assert answer.exit_code == 0, answer
    lines = answer.stdout.decode().split("\n")
    assert lines[0].split() == ["0", str(HOST_ID), "65536"] and lines[1:3] == ["0", "0"], lines
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_this_node_offers_user_namespaces(pulled: Pulled) -> None:
    """Debian 13's 6.12 takes an overlay over idmapped layers once they are attached (it takes no
    detached layer, which 6.15 does): the probe must find that, as the pod above then runs."""
    found = userns_answer(pulled)
    assert found["offered"], found["problem"]


@pytest.mark.parametrize("timeout", [0.2, 1.0, 3.0])
def test_a_self_check_cut_off_under_the_systemd_driver_leaves_no_scope(tmp_path: Path, timeout: float) -> None:
    runtime, bundle, outcome = cut_off(tmp_path, timeout, "systemd", "crishimguest.slice")
    if timeout == 0.2:
        assert "timed out" in outcome, outcome
    assert not [u for u in units("scope") if handlers.PROBE in u], outcome
    assert not (runtime.root / handlers.PROBE).exists() and not bundle.exists(), outcome
