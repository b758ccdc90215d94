"""Execs whose command leaves a background child holding its stdout and stderr: ExecSync and
streaming Exec end when the exec'd process exits, with its exit code and the output it wrote,
and the daemon keeps none of the pipes; the child runs on until its container is removed."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from tests.support import spdy_client
from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import Pulled, container_config, exec_sync, logged_pod, pulled_daemon, pulling_from, run_container

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture

# The probe of the issue: output, then a child that outlives the command and holds its pipes.
LEAVES_A_CHILD = ("sh", "-c", "echo before; sleep 365d &")
# A bound on a stream that never ends, so that the test fails rather than hangs.
HANG = 60


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def pipes_of(daemon: Daemon) -> int:
    """How many pipe ends the daemon holds open."""
    assert daemon.proc is not None
    fds = f"/proc/{daemon.proc.pid}/fd"
    count = 0
    for fd in os.listdir(fds):
        try:
            count += os.readlink(f"{fds}/{fd}").startswith("pipe:")
        except FileNotFoundError:
            continue
    return count


def sleepers(cri: Cri, cid: str) -> int:
    """How many `sleep 365d` run in the container."""
    listing = exec_sync(cri, cid, "ps", "-o", "args", timeout=30)
    return listing.stdout.decode().splitlines().count("sleep 365d")


def stream_exec(cri: Cri, cid: str, *argv: str, tty: bool = False) -> spdy_client.Result:
    request = api.ExecRequest(container_id=cid, cmd=list(argv), stdout=True, stderr=not tty, tty=tty)
    url = cri.runtime.Exec(request).url
    return asyncio.run(asyncio.wait_for(spdy_client.run(url, tty=tty), HANG))


def test_exec_sync_and_exec_end_when_the_command_exits(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "drain")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("app", "sleep", "600", image=pulled.name))
    pipes = pipes_of(d)

    # Used to run into the timeout (DEADLINE_EXCEEDED), "before" lost.
    answer = exec_sync(cri, cid, *LEAVES_A_CHILD, timeout=5)
    assert (answer.exit_code, answer.stdout, answer.stderr) == (0, b"before\n", b"")
    result = stream_exec(cri, cid, *LEAVES_A_CHILD)
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"before\n", b"")

    # The children of the pipe execs run on in the container, as under containerd; the daemon's
    # ends of the pipes are closed.
    assert sleepers(cri, cid) == 2
    assert pipes_of(d) == pipes
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_a_tty_exec_ends_when_the_command_exits(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "drain-tty")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("app", "sleep", "600", image=pulled.name))
    result = stream_exec(cri, cid, *LEAVES_A_CHILD, tty=True)
    assert (result.exit_code, result.stdout) == (0, b"before\r\n")
    assert sleepers(cri, cid) == 0  # the terminal's hangup ended the child
    assert not list(d.dir.rglob("*.console")), "the console socket outlived the exec"
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


class TestUntilThePipesClose:
    """drain_exec_sync_io_timeout_ms = 0, containerd's default: the output is read until every
    holder of the pipes has closed them, the child's later output included."""

    @pytest.fixture
    def daemon_overrides(self, registry: Registry) -> dict[str, Any]:
        overrides = pulling_from(registry)
        overrides["runtime"] = {"drain_exec_sync_io_timeout_ms": 0}
        return overrides

    def test_the_childs_output_is_waited_for(self, pulled: Pulled) -> None:
        cri, d = pulled.cri, pulled.daemon
        pod = logged_pod(d, "drainall")
        sid = run_pod(cri, pod)
        cid = run_container(cri, sid, pod, container_config("app", "sleep", "600", image=pulled.name))
        late = ("sh", "-c", "(sleep 1; echo late; echo too >&2) & echo early; exit 3")
        answer = exec_sync(cri, cid, *late, timeout=30)
        assert (answer.exit_code, answer.stdout, answer.stderr) == (3, b"early\nlate\n", b"too\n")
        result = stream_exec(cri, cid, *late)
        assert (result.exit_code, result.stdout, result.stderr) == (3, b"early\nlate\n", b"too\n")
        remove_pod(cri, sid)
        assert changes(pulled.before, snapshot(d)) == {}
