"""MigrationWarmer: writes the daemon's PID while held, and only then; a regular file stands in
for cgroup.procs, whose writes of an unchanged membership leave nothing to observe."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cri_shim.cgroups.migration import MigrationWarmer

pytestmark = pytest.mark.unit

PID = str(os.getpid()).encode()


def writes(path: Path) -> int:
    data = path.read_bytes()
    assert data == PID * (len(data) // len(PID))
    return len(data) // len(PID)


def wait_for_writes(path: Path, count: int) -> None:
    deadline = time.monotonic() + 10
    while writes(path) < count:
        assert time.monotonic() < deadline, f"{writes(path)} writes, wanted {count}"
        time.sleep(0.005)


def assert_quiet(path: Path) -> None:
    """At most the write under way when the last holder left lands after it."""
    time.sleep(0.05)
    before = writes(path)
    time.sleep(0.1)
    assert writes(path) == before


@pytest.fixture
def procs(tmp_path: Path) -> Path:
    path = tmp_path / "cgroup.procs"
    path.touch()
    return path


def test_writes_the_pid_while_held_and_stops_when_the_last_holder_leaves(procs: Path) -> None:
    warmer = MigrationWarmer(str(procs), interval=0.001)
    try:
        assert_quiet(procs)
        assert writes(procs) == 0
        with warmer.held():
            with warmer.held():
                wait_for_writes(procs, 3)
            before = writes(procs)
            wait_for_writes(procs, before + 3)  # one holder is still inside
        assert_quiet(procs)
        with warmer.held():  # the same thread wakes again
            wait_for_writes(procs, writes(procs) + 3)
    finally:
        warmer.close()
    assert_quiet(procs)


def test_a_file_that_cannot_be_opened_turns_it_off(tmp_path: Path) -> None:
    warmer = MigrationWarmer(str(tmp_path / "absent" / "cgroup.procs"))
    with warmer.held():
        pass
    assert warmer._thread is not None
    warmer._thread.join(10)  # it ends by itself
    assert not warmer._thread.is_alive() and warmer.procs_file is None
    with warmer.held():  # a no-op from then on
        pass
    warmer.close()


def test_without_a_file_nothing_runs() -> None:
    warmer = MigrationWarmer(None)
    with warmer.held():
        pass
    warmer.close()
    assert warmer._thread is None
