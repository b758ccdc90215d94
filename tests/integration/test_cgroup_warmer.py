"""The migration lock warmer on this host's real cgroup.procs: it finds the test process's own
cgroup, and its writes (the kernel takes the migration lock for each) move nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cri_shim.cgroups import hierarchy
from cri_shim.cgroups.migration import MigrationWarmer

pytestmark = pytest.mark.integration


def test_warming_the_lock_leaves_every_membership_as_it_was() -> None:
    procs = hierarchy.own_procs_file()
    assert procs is not None
    assert str(os.getpid()) in Path(procs).read_text().split()
    before = Path("/proc/self/cgroup").read_text()
    threads_before = sorted(os.listdir("/proc/self/task"))
    warmer = MigrationWarmer(procs, interval=0.001)
    try:
        with warmer.held():
            time.sleep(0.2)
            assert warmer._thread is not None and warmer._thread.is_alive() and warmer.procs_file == procs
            for tid in os.listdir("/proc/self/task"):  # the warmer's own thread too
                assert Path(f"/proc/self/task/{tid}/cgroup").read_text() == before
    finally:
        warmer.close()
    assert Path("/proc/self/cgroup").read_text() == before
    # The warmer's thread is gone with close() (threads earlier tests left may end meanwhile).
    assert set(os.listdir("/proc/self/task")) - set(threads_before) == set()
