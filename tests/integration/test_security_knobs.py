"""The operator's knobs through a real daemon: runtime.default_pids_limit,
runtime.seccomp_default_when_unset and runtime.log_size_max_bytes, off (the defaults) and on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import api
from tests.support.crilog import written
from tests.support.daemon import merge
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled, container_config, exec_sync, logged_pod, pulled_daemon, pulling_from, run_container, until,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture

KNOBS = {"runtime": {"default_pids_limit": 100, "seccomp_default_when_unset": True, "log_size_max_bytes": 16384}}


@pytest.fixture
def daemon_overrides(request: pytest.FixtureRequest, registry: Registry) -> dict[str, Any]:
    return merge(pulling_from(registry), getattr(request, "param", {}))


@pytest.mark.parametrize("daemon_overrides, pids_max, unset_seccomp", [({}, "max", "0"), (KNOBS, "100", "2")],
                         indirect=["daemon_overrides"], ids=["defaults", "knobs"])
def test_pids_limit_and_seccomp_for_containers_that_set_neither(pulled: Pulled, pids_max: str, unset_seccomp: str) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "knobs")
    sid = run_pod(cri, pod)
    plain = run_container(cri, sid, pod, container_config("plain", "sleep", "600", image=pulled.name))
    assert exec_sync(cri, plain, "cat", "/sys/fs/cgroup/pids/pids.max").stdout.decode().strip() == pids_max
    assert exec_sync(cri, plain, "grep", "^Seccomp:", "/proc/self/status").stdout.split()[1] == unset_seccomp.encode()
    # An explicit Unconfined stays unconfined whatever the knob says.
    unconfined = container_config("unconfined", "sleep", "600", image=pulled.name)
    unconfined.linux.security_context.seccomp.profile_type = api.SecurityProfile.Unconfined
    cid = run_container(cri, sid, pod, unconfined)
    assert exec_sync(cri, cid, "grep", "^Seccomp:", "/proc/self/status").stdout.split()[1] == b"0"
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


@pytest.mark.parametrize("daemon_overrides", [KNOBS], indirect=True, ids=["knobs"])
def test_the_log_is_kept_under_the_size_cap(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "capped")
    sid = run_pod(cri, pod)
    run_container(cri, sid, pod, container_config(
        "app", "sh", "-c", "i=0; while :; do echo line $i; i=$((i+1)); done", image=pulled.name))
    log = Path(pod.log_directory) / "app_0.log"

    def numbers() -> list[int]:
        return [int(e.content[5:]) for e in written(log) if re.fullmatch(r"line \d+", e.content)]

    # Some 45 bytes a line: line 2000 is well past 16 KiB of output.
    until(lambda: max(numbers(), default=0) >= 2000, "line 2000 in the log")
    assert log.stat().st_size <= 16384
    assert 0 not in numbers()  # the file was started afresh
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
