"""Making a pod's user namespace under faults of the `unshare` child that makes it: a child that
fails is INTERNAL with nothing left, and a daemon killed while the child starts leaves no process
(the child's `cat` reads the end of a pipe nobody writes to any more) and no pin."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.leftovers import release_leftovers
from tests.support.pods import pod_config, remove_pod, run_pod, snapshot, changes, status, warm_up
from tests.support.userns import userns
from tests.support.workloads import WAIT, until

pytestmark = pytest.mark.fault

REAL_UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
# The wrapper records its pid, then fails, waits for a go file, or runs the real unshare.
WRAPPER = """#!/bin/sh
echo $$ > "{dir}/pid"
case "$(cat "{dir}/mode" 2>/dev/null)" in
    fail) echo "injected unshare failure" >&2; exit 1 ;;
    wait) while [ ! -e "{dir}/go" ]; do sleep 0.05; done ;;
esac
exec {real} "$@"
"""


@pytest.fixture
def wrapped(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    """A daemon whose `unshare` is the wrapper (in a directory first in its PATH)."""
    control = tmp_path / "unshare"
    control.mkdir()
    wrapper = control / "unshare"
    wrapper.write_text(WRAPPER.format(dir=control, real=REAL_UNSHARE))
    wrapper.chmod(0o755)
    d = Daemon(env={"PATH": f"{control}:{os.environ['PATH']}"})
    try:
        d.start()
        yield d, control
    finally:
        (control / "go").touch()
        d.stop()
        release_leftovers(d)
        shutil.rmtree(d.dir, ignore_errors=True)


def userns_pod(name: str) -> api.PodSandboxConfig:
    return pod_config(name, linux=api.LinuxPodSandboxConfig(
        security_context=api.LinuxSandboxSecurityContext(namespace_options=userns(1000000))))


def armed(wrapped: tuple[Daemon, Path], mode: str) -> tuple[Cri, dict[str, object]]:
    """A client after one pod went through, the leak snapshot to compare with, the wrapper armed."""
    d, control = wrapped
    cri = Cri(d.endpoint)
    warm_up(cri)
    before = snapshot(d)
    (control / "mode").write_text(mode)
    return cri, before


def test_a_failing_unshare_is_internal_and_leaves_nothing(wrapped: tuple[Daemon, Path]) -> None:
    d, control = wrapped
    cri, before = armed(wrapped, "fail")
    with pytest.raises(grpc.RpcError) as err:
        run_pod(cri, userns_pod("failing"))
    assert err.value.code() == grpc.StatusCode.INTERNAL and "user namespace" in err.value.details(), err.value.details()
    assert changes(before, snapshot(d)) == {}
    (control / "mode").write_text("")
    sid = run_pod(cri, userns_pod("failing"))  # the retry
    assert status(cri, sid)[0].state == api.SANDBOX_READY
    remove_pod(cri, sid)
    assert changes(before, snapshot(d)) == {}
    cri.close()


def test_a_daemon_killed_while_the_child_starts_leaves_no_process_or_pin(wrapped: tuple[Daemon, Path]) -> None:
    d, control = wrapped
    cri, before = armed(wrapped, "wait")
    call = cri.runtime.RunPodSandbox.future(api.RunPodSandboxRequest(config=userns_pod("killed")))
    until(lambda: (control / "pid").exists() and (control / "pid").read_text().strip() != "", "the unshare child starting")
    child = int((control / "pid").read_text())
    d.kill()
    with pytest.raises(grpc.RpcError):
        call.result(timeout=WAIT)
    (control / "mode").write_text("")
    (control / "go").touch()  # the child goes on: unshare, then cat, which finds its stdin closed
    until(lambda: not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split(")")[1].split()[0] == "Z",
          "the orphaned unshare child exiting")
    d.start()
    cri = Cri(d.endpoint)
    assert changes(before, snapshot(d)) == {}
    assert list((Path(d.config["paths"]["run_dir"]) / "ns" / "user").iterdir()) == []
    sid = run_pod(cri, userns_pod("killed"))  # kubelet's retry
    remove_pod(cri, sid)
    cri.close()
