"""The daemon's event loop setup: a default pool that grows past six threads, and children
waited for through pidfds (no thread per child) where Python 3.11 runs on a kernel with them."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator

import pytest

from cri_shim import eventloop

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def default_child_watcher() -> Iterator[None]:
    """The process-wide watcher prepare() sets is bound to the test's loop: later tests get the default again."""
    yield
    if sys.version_info < (3, 12):
        asyncio.set_child_watcher(None)


def test_blocking_jobs_run_side_by_side_past_the_default_six() -> None:
    jobs = 12
    barrier = threading.Barrier(jobs, timeout=10)

    async def scenario() -> None:
        eventloop.prepare(asyncio.get_running_loop())
        # Each job waits for all the others: with fewer threads than jobs the barrier breaks.
        await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(jobs)))

    asyncio.run(scenario())


def test_children_are_waited_for_without_a_thread_each() -> None:
    async def scenario() -> list[int]:
        eventloop.prepare(asyncio.get_running_loop())
        before = threading.active_count()
        procs = [await asyncio.create_subprocess_exec("sh", "-c", f"sleep 0.2; exit {n}") for n in range(5)]
        during = threading.active_count()
        codes = [await p.wait() for p in procs]
        if sys.version_info < (3, 12):
            assert isinstance(asyncio.get_child_watcher(), asyncio.PidfdChildWatcher)
            assert during == before  # the default watcher would have started five threads
        return codes

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]
