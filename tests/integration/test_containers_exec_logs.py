"""ExecSync, log reopening and stats against running containers."""

from __future__ import annotations

import os
import time

import pytest

from cri_shim.cgroups import stats as cgstats
from cri_shim.errors import DeadlineExceeded, FailedPrecondition
from tests.support import crilog
from tests.support.containers import Harness, module_harness

pytestmark = pytest.mark.integration
_ = module_harness  # the module-wide `h` fixture


@pytest.fixture(scope="module")
def running(h: Harness) -> str:
    return h.start(h.create(h.config("sleep", "100000"))).id


def test_exec_sync_separates_stdout_stderr_and_exit_code(h: Harness, running: str) -> None:
    result = h.run(h.runtime.exec_sync(h.get(running), ["sh", "-c", "echo -n hello; echo -n oops >&2; exit 3"], 10))
    assert (result.stdout, result.stderr, result.exit_code) == (b"hello", b"oops", 3)


def test_exec_sync_runs_as_the_container_user_and_env(h: Harness) -> None:
    cfg = h.config("sleep", "100000")
    cfg.linux.security_context.run_as_user.value = 33
    cfg.envs.add(key="GREETING", value="hi")
    rec = h.start(h.create(cfg))
    result = h.run(h.runtime.exec_sync(h.get(rec.id), ["sh", "-c", "id -u; echo $GREETING"], 10))
    assert result.stdout == b"33\nhi\n"
    h.run(h.runtime.remove(rec))


def test_exec_sync_timeout_kills_and_reaps_the_process(h: Harness, running: str) -> None:
    with pytest.raises(DeadlineExceeded):
        h.run(h.runtime.exec_sync(h.get(running), ["sleep", "4321"], 1))
    left = h.run(h.runtime.exec_sync(h.get(running), ["sh", "-c", "pgrep sleep | grep -v '^1$' || true"], 10))
    assert left.stdout == b""
    # Nothing on the host either: no sleep 4321 and no leftover runc.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        assert b"sleep\x004321" not in cmd


def test_exec_sync_caps_output_below_the_message_limit(h: Harness, running: str) -> None:
    result = h.run(h.runtime.exec_sync(h.get(running), ["sh", "-c", "head -c 20000000 /dev/zero"], 60))
    assert len(result.stdout) == h.runtime.exec_output_limit and result.exit_code == 0


def test_exec_sync_in_stopped_container_fails(h: Harness) -> None:
    rec = h.run_to_exit(h.config("true"))
    with pytest.raises(FailedPrecondition):
        h.run(h.runtime.exec_sync(h.get(rec.id), ["true"], 5))


def test_reopen_log_switches_to_a_new_file(h: Harness) -> None:
    rec = h.start(h.create(h.config("sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done")))
    log = h.log_path(rec)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size == 0):
        time.sleep(0.05)
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)
    h.run(h.runtime.reopen_log(h.get(rec.id)))
    assert log.exists()
    size = rotated.stat().st_size
    time.sleep(0.5)
    assert rotated.stat().st_size == size
    new = crilog.parse(log)
    assert new and all(e.stream == "stdout" and e.content.startswith("line ") for e in new)
    h.run(h.runtime.remove(rec))


def test_reopen_log_of_stopped_container_fails_without_creating_a_file(h: Harness) -> None:
    rec = h.run_to_exit(h.config("true"))
    os.unlink(h.log_path(rec))
    with pytest.raises(FailedPrecondition):
        h.run(h.runtime.reopen_log(h.get(rec.id)))
    assert not h.log_path(rec).exists()


def test_stats_of_running_container(h: Harness) -> None:
    cfg = h.config("sh", "-c", "x=$(head -c 4000000 /dev/zero | tr '\\\\0' a); while true; do sleep 1; done")
    cfg.linux.resources.memory_limit_in_bytes = 64 * 1024 * 1024
    rec = h.start(h.create(cfg))
    h.run(h.runtime.exec_sync(h.get(rec.id), ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"], 30))
    s = cgstats.read(h.get(rec.id).cgroups_path)
    assert s is not None
    assert s.cpu_usage_ns > 0 and s.memory_usage_bytes > 0
    assert 0 < s.memory_working_set_bytes <= s.memory_usage_bytes
    assert s.memory_limit_bytes == 64 * 1024 * 1024 and s.page_faults > 0
    h.run(h.runtime.remove(rec))
    assert h.runtime.store.get(rec.id) is None


def test_update_resources_changes_the_cgroup(h: Harness) -> None:
    from cri_shim.api import api_pb2 as api
    cfg = h.config("sleep", "100000")
    cfg.linux.resources.memory_limit_in_bytes = 64 * 1024 * 1024
    rec = h.start(h.create(cfg))
    new = api.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=96 * 1024 * 1024, cpu_quota=20000, cpu_period=100000)
    updated = h.run(h.runtime.update_resources(h.get(rec.id), new))
    assert updated.config.linux.resources.cpu_shares == 256
    mem = cgstats.cgroup_dir(rec.cgroups_path, "memory")
    cpu = cgstats.cgroup_dir(rec.cgroups_path, "cpu")
    if cgstats.is_v2():
        assert (mem / "memory.max").read_text().strip() == str(96 * 1024 * 1024)
    else:
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(96 * 1024 * 1024)
        assert (cpu / "cpu.shares").read_text().strip() == "256"
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "20000"
    h.run(h.runtime.remove(rec))


def test_tty_container_logs_its_terminal(h: Harness) -> None:
    cfg = h.config("sh", "-c", "tty; echo done")
    cfg.tty = True
    rec = h.run_to_exit(cfg)
    lines = crilog.messages(crilog.parse(h.log_path(rec)), "stdout")
    assert lines[0].rstrip("\r").startswith("/dev/pts/") and lines[1].rstrip("\r") == "done"


def test_stdin_through_the_attach_socket(h: Harness) -> None:
    import socket

    cfg = h.config("sh", "-c", "read x; echo got $x")
    cfg.stdin, cfg.stdin_once = True, True
    rec = h.start(h.create(cfg))
    path = h.monitor.attach_socket(rec.id)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(str(path))
        s.sendall(b"hello\n")
        packet = s.recv(8192)
    assert packet[0] == 2 and packet[1:].startswith(b"got hello")  # stream id 2: stdout
    rec = h.wait_exit(rec)
    assert rec.exit_code == 0
