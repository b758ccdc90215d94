"""Container lifecycle under injected runc and conmon faults (fail, crash, hang at each step).

The container layer runs with wrapper binaries (tests/support/faultbin.py) in place of runc and
conmon. Every failed step must raise a clear error and leave nothing behind once the container
is removed; the same step succeeds when retried after the fault is cleared.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cri_shim.errors import CriError, Internal
from cri_shim.runtime.record import CONTAINER_EXITED, CONTAINER_RUNNING
from tests.support.containers import Harness
from tests.support.faultbin import FaultyBinary
from tests.support.workloads import until

pytestmark = pytest.mark.fault


class Faulty:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="cf", dir="/tmp"))
        self.tools = {tool: FaultyBinary(self.base, tool) for tool in ("runc", "conmon")}
        self.h = Harness(runc=str(self.tools["runc"].path), conmon=str(self.tools["conmon"].path))
        rec = self.h.start(self.h.create(self.h.config("true")))  # the layer's directories now exist
        self.h.wait_exit(rec)
        self.h.run(self.h.runtime.remove(rec))

    def reset(self) -> None:
        for tool in self.tools.values():
            tool.kill_hung()
        self.reset_control()

    def reset_control(self) -> None:
        for tool in self.tools.values():
            tool.clear()

    def close(self) -> None:
        self.reset()
        self.h.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def module_faulty() -> Iterator[Faulty]:
    f = Faulty()
    yield f
    f.close()


@pytest.fixture
def faulty(module_faulty: Faulty) -> Iterator[Faulty]:
    before = module_faulty.h.leftovers()
    yield module_faulty
    module_faulty.reset()
    for record in list(module_faulty.h.runtime.store):
        module_faulty.h.run(module_faulty.h.runtime.remove(record))
    assert module_faulty.h.leftovers() == before


def _killing_when_hung(tool: FaultyBinary) -> threading.Thread:
    """A thread that kills the wrapper once it hangs (as a supervisor's timeout would)."""
    def kill() -> None:
        tool.wait_hung()
        tool.kill_hung()
    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def _fails(f: Faulty, tool: str, mode: str, action: Any) -> CriError:
    """Runs action with the fault armed; the error it raised."""
    killer = _killing_when_hung(f.tools[tool]) if mode == "hang" else None
    with pytest.raises(CriError) as err:
        action()
    if killer is not None:
        killer.join(timeout=30)
    f.reset()
    return err.value


@pytest.mark.parametrize("tool,step,mode", [
    ("runc", "create", "fail"), ("runc", "create", "crash"), ("runc", "create", "hang"),
    ("conmon", "run", "fail"), ("conmon", "run", "crash"),
])
def test_create_fault_leaves_nothing_and_a_retry_succeeds(faulty: Faulty, tool: str, step: str, mode: str) -> None:
    h = faulty.h
    before = h.leftovers()
    config = h.config("sh", "-c", "exit 3", name="retried")
    faulty.tools[tool].inject(step, mode)
    err = _fails(faulty, tool, mode, lambda: h.create(config))
    assert isinstance(err, Internal), err
    assert step in faulty.tools[tool].calls()
    if mode == "fail":
        assert f"injected {tool} failure" in str(err), err
    assert list(h.runtime.store) == []
    assert h.leftovers() == before
    rec = h.wait_exit(h.start(h.create(config)))
    assert (rec.state, rec.exit_code) == (CONTAINER_EXITED, 3)


@pytest.mark.parametrize("mode", ["fail", "crash", "hang"])
def test_start_fault_reports_start_error_and_remove_cleans_up(faulty: Faulty, mode: str) -> None:
    h = faulty.h
    before = h.leftovers()
    rec = h.create(h.config("sleep", "1000"))
    faulty.tools["runc"].inject("start", mode)
    err = _fails(faulty, "runc", mode, lambda: h.start(rec))
    assert isinstance(err, Internal), err
    after = h.get(rec.id)
    assert (after.state, after.reason, after.exit_code) == (CONTAINER_EXITED, "StartError", 128)
    h.run(h.runtime.remove(rec))
    assert h.leftovers() == before


@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_kill_fault_fails_the_stop_and_a_retry_stops(faulty: Faulty, mode: str) -> None:
    h = faulty.h
    before = h.leftovers()
    rec = h.start(h.create(h.config("sleep", "1000")))
    faulty.tools["runc"].inject("kill", mode)
    err = _fails(faulty, "runc", mode, lambda: h.run(h.runtime.stop(rec, 0)))
    assert isinstance(err, Internal), err
    assert h.get(rec.id).state == CONTAINER_RUNNING  # nothing was signalled
    h.run(h.runtime.stop(rec, 0))
    after = h.get(rec.id)
    assert (after.state, after.exit_code) == (CONTAINER_EXITED, 137)
    h.run(h.runtime.remove(rec))
    assert h.leftovers() == before


@pytest.mark.parametrize("recorded", ["start time", "no start time", "another start time"])
def test_the_stop_signal_reaches_only_the_recorded_process(faulty: Faulty, recorded: str) -> None:
    """The stop signal goes from the daemon to the container's first process, through a pidfd
    of the process recorded at create (its pid and start time): no runtime call. A record made
    before the start time was kept has `runc kill` send it; one whose start time is not the
    process's (its pid since reused) sends none, and the stop ends in SIGKILL by the runtime."""
    h = faulty.h
    before = h.leftovers()
    rec = h.start(h.create(h.config("sh", "-c", "trap 'exit 7' TERM; echo ready; while true; do sleep 0.05; done")))
    assert rec.pid_start_time > 0
    until(lambda: h.log_path(rec).exists() and "ready" in h.log_path(rec).read_text(), "the container's trap set")
    if recorded != "start time":
        rec = dataclasses.replace(rec, pid_start_time=0 if recorded == "no start time" else rec.pid_start_time + 1)
        h.runtime.store.save(rec)
    (faulty.tools["runc"].dir / "calls.log").unlink(missing_ok=True)
    h.run(h.runtime.stop(rec, 2))
    after = h.get(rec.id)
    expected = {"start time": (7, []), "no start time": (7, ["kill"]), "another start time": (137, ["kill"])}[recorded]
    assert (after.exit_code, [c for c in faulty.tools["runc"].calls() if c == "kill"]) == expected
    h.run(h.runtime.remove(rec))
    assert h.leftovers() == before


@pytest.mark.parametrize("mode", ["fail", "crash"])
def test_delete_fault_keeps_the_container_until_a_remove_succeeds(faulty: Faulty, mode: str) -> None:
    h = faulty.h
    before = h.leftovers()
    rec = h.wait_exit(h.start(h.create(h.config("true"))))
    faulty.tools["runc"].inject("delete", mode)
    if mode == "fail":
        with pytest.raises(Internal):
            h.run(h.runtime.remove(rec))
        assert h.get(rec.id).state == CONTAINER_EXITED  # kept, so a retry can finish
    else:  # the delete was done and its answer lost: either outcome is clean if a retry finishes
        try:
            h.run(h.runtime.remove(rec))
        except Internal:
            pass
    faulty.reset()
    h.run(h.runtime.remove(rec))
    assert list(h.runtime.store) == []
    assert h.leftovers() == before


CREATOR = """
import sys
from pathlib import Path
from tests.support.containers import Harness
h = Harness(Path(sys.argv[1]), runc=sys.argv[2], conmon=sys.argv[3])
print("ready", flush=True)
h.create(h.config("sleep", "1000", name="interrupted"))
"""


@pytest.mark.restart
@pytest.mark.parametrize("stuck", [False, True], ids=["runc-killed", "runc-still-stuck"])
def test_kill_9_during_create_is_cleaned_up_at_start(stuck: bool) -> None:
    """The process driving a create dies while runc create hangs; the next start discards the
    half-made container, and with it the monitor and runc call still waiting on it."""
    f = Faulty()
    directory, runc, conmon = f.h.dir, f.tools["runc"], f.tools["conmon"]
    before = f.h.leftovers()
    f.h.runtime.close()  # a successor owns the directory from now on
    f.h.loop.close()
    h = f.h
    try:
        runc.inject("create", "hang")
        child = subprocess.Popen([sys.executable, "-c", CREATOR, str(directory), str(runc.path), str(conmon.path)],
                                 stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
                                 env={**os.environ, "PYTHONPATH": "."})
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
            runc.wait_hung()
        finally:
            child.kill()
            child.wait()
        if not stuck:
            runc.kill_hung()
        f.reset_control()
        h = Harness(directory, runc=str(runc.path), conmon=str(conmon.path))
        assert list(h.runtime.store) == []
        assert h.leftovers() == before
    finally:
        f.reset()
        if h is not f.h:
            h.close()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(f.base, ignore_errors=True)
