"""ExecSync output that would not fit a gRPC reply: truncated to fit, the exit code kept."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from cri_shim.runtime.execsync import output_limit
from tests.support import spdy_client
from tests.support.client import api
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import Pulled, container_config, exec_sync, logged_pod, pulled_daemon, pulling_from, run_container, status, until, verbose_info

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture

MIB = 1024 * 1024


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


def test_output_over_the_message_limit_is_truncated_and_the_exit_code_kept(pulled: Pulled) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "bigexec")
    sid = run_pod(cri, pod)
    cid = run_container(cri, sid, pod, container_config("app", "sleep", "600", image=pulled.name))
    limit = output_limit(16 * MIB)  # the daemon's default max_message_bytes

    # 16 MiB of stdout alone used to overflow the reply and lose the exit code.
    answer = exec_sync(cri, cid, "sh", "-c", "head -c 16777216 /dev/zero; exit 7", timeout=60)
    assert answer.exit_code == 7
    assert len(answer.stdout) == limit and answer.stderr == b""

    # Both streams share the budget: 10 MiB of each still fits in one reply.
    answer = exec_sync(cri, cid, "sh", "-c", "head -c 10485760 /dev/zero; head -c 10485760 /dev/zero >&2; exit 3",
                       timeout=60)
    assert answer.exit_code == 3
    assert len(answer.stdout) + len(answer.stderr) == limit

    # Output under the limit is untouched.
    answer = exec_sync(cri, cid, "sh", "-c", "echo -n out; echo -n err >&2; exit 1")
    assert (answer.stdout, answer.stderr, answer.exit_code) == (b"out", b"err", 1)

    assert "exec output truncated" in d.log_path.read_text()
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_execs_never_hand_the_hosts_dev_null_to_the_containers_user(pulled: Pulled) -> None:
    """crun gives an exec's non-terminal stdio to the exec's user, /dev/null included: an exec
    with no input and no wanted output, as a user other than root, must leave /dev/null root's
    (the node the daemon sees, which is the host's outside the tests' namespace)."""
    cri, d = pulled.cri, pulled.daemon
    before = os.stat("/dev/null")
    pod = logged_pod(d, "devnull")
    sid = run_pod(cri, pod)
    cfg = container_config("app", "sleep", "600", image=pulled.name)
    cfg.linux.security_context.run_as_user.value = 1000
    cid = run_container(cri, sid, pod, cfg)
    assert exec_sync(cri, cid, "id", "-u").stdout == b"1000\n"
    for request in (api.ExecRequest(container_id=cid, cmd=["true"], stderr=True),
                    api.ExecRequest(container_id=cid, cmd=["true"], stdout=True, tty=True)):
        result = asyncio.run(spdy_client.run(cri.runtime.Exec(request).url, tty=request.tty))
        assert result.exit_code == 0
    after = os.stat("/dev/null")
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (before.st_uid, before.st_gid, stat.S_IMODE(before.st_mode)) == (0, 0, 0o666)
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}


def test_a_container_without_stdin_never_gets_the_hosts_dev_null(pulled: Pulled) -> None:
    """conmon hands a container that asked for no stdin its own open /dev/null, which is the
    host's node: a root container (CAP_CHOWN and CAP_FOWNER are in the default set) could chown
    and chmod it through /proc/self/fd/0 and break /dev/null for the whole node. Its stdin is a
    pipe at EOF instead, so reading it ends at once as before."""
    cri, d = pulled.cri, pulled.daemon
    before = os.stat("/dev/null")
    pod = logged_pod(d, "nullstdin")
    sid = run_pod(cri, pod)
    script = "cat; echo read-eof; chown 4321 /proc/self/fd/0; chmod 600 /proc/self/fd/0; exec sleep 600"
    cid = run_container(cri, sid, pod, container_config("app", "sh", "-c", script, image=pulled.name))
    try:
        log = Path(status(cri, cid).log_path)
        until(lambda: log.exists() and "read-eof" in log.read_text(), "the container to read EOF on its stdin")
        pid = verbose_info(cri, cid)["pid"]
        fd0 = os.stat(f"/proc/{pid}/fd/0")
        assert stat.S_ISFIFO(fd0.st_mode), "the container's stdin is a pipe, not a device node"
        after = os.stat("/dev/null")
        assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (before.st_uid, before.st_gid, 0o666)
    finally:
        now = os.stat("/dev/null")
        if (now.st_uid, stat.S_IMODE(now.st_mode)) != (0, 0o666):  # what the probe broke, mended for the tests after it
            os.chown("/dev/null", 0, 0)
            os.chmod("/dev/null", 0o666)
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
