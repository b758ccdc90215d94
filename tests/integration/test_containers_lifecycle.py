"""Container lifecycle with real runc and conmon: create, start, exit reasons, stop, remove."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from cri_shim.errors import Internal, InvalidArgument, NotFound
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.runtime.record import CONTAINER_CREATED, CONTAINER_EXITED, CONTAINER_RUNNING
from tests.support import crilog
from tests.support.containers import Harness
from tests.support.workloads import until

pytestmark = pytest.mark.integration


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def test_create_start_stop_remove(h: Harness) -> None:
    rec = h.create(h.config("sleep", "1000"))
    assert rec.state == CONTAINER_CREATED and rec.pid > 0
    assert h.run(h.runc.state(rec.id))["status"] == "created"
    rec = h.start(rec)
    assert rec.state == CONTAINER_RUNNING and rec.started_at >= rec.created_at
    h.run(h.runtime.stop(rec, 2))
    rec = h.get(rec.id)
    assert rec.state == CONTAINER_EXITED
    # busybox sleep as PID 1 of its namespace: SIGTERM has no handler, so only SIGKILL ended it.
    assert (rec.exit_code, rec.reason) == (137, "Error")
    h.run(h.runtime.remove(rec))
    assert h.runtime.store.get(rec.id) is None
    assert not os.path.exists(rec.bundle)
    with pytest.raises(NotFound):
        h.run(h.runc.state(rec.id))
    # Idempotent: unknown ids are already stopped and removed.
    h.run(h.runtime.stop(rec, 1))
    h.run(h.runtime.remove(rec))


@pytest.mark.parametrize(("script", "code", "reason"), [("exit 0", 0, "Completed"), ("exit 1", 1, "Error")])
def test_exit_codes_and_reasons(h: Harness, script: str, code: int, reason: str) -> None:
    rec = h.run_to_exit(h.config("sh", "-c", script))
    assert (rec.state, rec.exit_code, rec.reason) == (CONTAINER_EXITED, code, reason)
    assert rec.finished_at >= rec.started_at > 0


def test_sigkill_from_outside_is_exit_137(h: Harness) -> None:
    rec = h.start(h.create(h.config("sleep", "1000")))
    assert h.run(h.runc.kill(rec.id, signal.SIGKILL))
    rec = h.wait_exit(rec)
    assert (rec.exit_code, rec.reason) == (137, "Error")


def test_oom_kill_is_reported_as_oomkilled(h: Harness) -> None:
    cfg = h.config("dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
    cfg.linux.resources.memory_limit_in_bytes = 16 * 1024 * 1024
    rec = h.run_to_exit(cfg)
    assert (rec.exit_code, rec.reason) == (137, "OOMKilled")


def test_oom_of_a_child_with_exit_0_is_completed(h: Harness) -> None:
    cfg = h.config("sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; echo survived")
    cfg.linux.resources.memory_limit_in_bytes = 16 * 1024 * 1024
    rec = h.run_to_exit(cfg)
    assert (rec.exit_code, rec.reason) == (0, "Completed")
    assert "survived" in crilog.messages(crilog.parse(h.log_path(rec)), "stdout")


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(h: Harness) -> None:
    rec = h.start(h.create(h.config("sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done")))
    h.run(h.runtime.stop(rec, 1))
    rec = h.get(rec.id)
    assert (rec.state, rec.exit_code) == (CONTAINER_EXITED, 137)


def test_stop_signal_from_the_image_is_used(h: Harness) -> None:
    script = "trap 'echo got-usr1; exit 42' USR1; echo ready; while true; do sleep 0.1; done"
    rec = h.start(h.create(h.config("sh", "-c", script), image=ImageConfig(stop_signal="SIGUSR1")))
    assert rec.stop_signal == signal.SIGUSR1
    # The stop signal is sent at once: the shell, PID 1 of its namespace, ignores it until the trap is set.
    until(lambda: h.log_path(rec).exists() and "ready" in h.log_path(rec).read_text(), "the container's trap set")
    h.run(h.runtime.stop(rec, 30))
    rec = h.get(rec.id)
    assert (rec.exit_code, rec.reason) == (42, "Error")


def test_stop_and_remove_of_created_container(h: Harness) -> None:
    rec = h.create(h.config("sleep", "1000"))
    h.run(h.runtime.stop(rec, 1))
    assert h.get(rec.id).state == CONTAINER_CREATED
    h.run(h.runtime.remove(rec))
    assert h.runtime.store.get(rec.id) is None


def test_remove_running_container_kills_it(h: Harness) -> None:
    rec = h.start(h.create(h.config("sleep", "1000")))
    h.run(h.runtime.remove(rec))
    assert h.runtime.store.get(rec.id) is None
    assert not os.path.exists(f"/proc/{rec.pid}/status") or "zombie" in open(f"/proc/{rec.pid}/status").read()


def test_logs_are_in_cri_format_with_partial_lines(h: Harness) -> None:
    rec = h.run_to_exit(h.config("sh", "-c", "echo hello World; printf 'no newline'; echo oops >&2"))
    entries = crilog.parse(h.log_path(rec))
    assert [(e.stream, e.content) for e in entries if e.stream == "stdout" and not e.partial] == [("stdout", "hello World")]
    assert ("stdout", True, "no newline") in [(e.stream, e.partial, e.content) for e in entries]
    assert crilog.messages(entries, "stderr") == ["oops"]


def test_failed_create_leaves_nothing(h: Harness) -> None:
    before = set(os.listdir(h.dir / "bundles"))
    missing_binary = h.config("/does/not/exist")
    with pytest.raises(Internal, match="does/not/exist"):
        h.create(missing_binary)
    bad_user = h.config("sleep", "1")
    bad_user.linux.security_context.run_as_username = "no-such-user"
    with pytest.raises(InvalidArgument, match="no-such-user"):
        h.create(bad_user)
    assert set(os.listdir(h.dir / "bundles")) == before
    assert not [r for r in h.runtime.store if r.config.metadata.name in (missing_binary.metadata.name, bad_user.metadata.name)]
    assert not h.runc.root.exists() or not os.listdir(h.runc.root)  # no runc state left behind
    assert not list((h.dir / "exits").iterdir())


def test_target_pid_namespace_sees_the_target(h: Harness) -> None:
    from cri_shim.api import api_pb2 as api
    from cri_shim.runtime import plan

    target = h.start(h.create(h.config("sleep", "4242")))
    cfg = h.config("ps", "-o", "args")
    cfg.linux.security_context.namespace_options.pid = api.TARGET
    cfg.linux.security_context.namespace_options.target_id = target.id
    ns = plan.pid_namespace(h.running(target.id))
    rec = h.run_to_exit(cfg, target_pid_ns=ns)
    assert "sleep 4242" in crilog.messages(crilog.parse(h.log_path(rec)), "stdout")


def test_relative_log_path_without_log_directory_is_refused(h: Harness) -> None:
    from cri_shim.runtime import plan

    before = h.leftovers()
    with pytest.raises(InvalidArgument, match="log path"):
        plan.log_file(h.config("true"), "")  # the pod has no log_directory
    assert list(h.runtime.store) == [] and h.leftovers() == before
