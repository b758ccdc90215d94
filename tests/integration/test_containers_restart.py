"""Containers outlive the process that created them; exits while it is down are not lost."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import NotFound
from cri_shim.runtime.containers import ContainerRuntime
from cri_shim.runtime.record import CONTAINER_EXITED, CONTAINER_RUNNING, ContainerRecord
from tests.support.containers import Harness

pytestmark = pytest.mark.restart

CHILD = """
import sys, time
from pathlib import Path
from cri_shim.api import api_pb2 as api
from tests.support.containers import Harness
h = Harness(Path(sys.argv[1]))
survivor = h.start(h.create(h.config("sleep", "100000", name="survivor")))
quitter = h.start(h.create(h.config("sh", "-c", "read x; exit 7", name="quitter", stdin=True, stdin_once=True)))
gate = api.Mount(container_path="/gate", host_path=str(h.dir / "gate"))
finisher = h.start(h.create(h.config("sh", "-c", "while [ ! -e /gate/go ]; do sleep 0.05; done; exit 7", name="finisher",
                                     mounts=[gate])))
print(survivor.id, quitter.id, finisher.id, flush=True)
time.sleep(1000)
"""


def test_container_survives_kill_9_and_its_exit_is_recorded_later() -> None:
    first = Harness()
    directory = first.dir
    first.runtime.close()
    first.loop.close()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory)], stdout=subprocess.PIPE,
                             cwd=Path(__file__).resolve().parents[2], env={**os.environ, "PYTHONPATH": "."})
    try:
        assert child.stdout is not None
        survivor_id, quitter_id, finisher_id = child.stdout.readline().decode().split()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    h = Harness(directory)
    try:
        # The creator is gone; both containers still run under their monitors.
        assert h.run(h.runc.state(survivor_id))["status"] == "running"
        assert h.get(survivor_id).state == CONTAINER_RUNNING
        # The quitter exits while no runtime watches: killed from outside, as an OOM killer would.
        h.runtime.close()
        h.run(h.runc.kill(quitter_id, signal.SIGKILL))
        (directory / "gate" / "go").touch()  # the finisher exits by itself, with its own code
        deadline = time.monotonic() + 10
        while None in (h.monitor.exits.read(quitter_id), h.monitor.exits.read(finisher_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        h.loop.close()
        again = Harness(directory)
        try:
            quitter = again.get(quitter_id)
            assert (quitter.state, quitter.exit_code, quitter.reason) == (CONTAINER_EXITED, 137, "Error")
            finisher = again.get(finisher_id)
            assert (finisher.state, finisher.exit_code, finisher.reason) == (CONTAINER_EXITED, 7, "Error")
            # Exits after the restart arrive through the watcher, without asking.
            seen: list[str] = []
            again.runtime.subscribe(lambda event, rec: seen.append(rec.id))
            again.run(again.runc.kill(survivor_id, signal.SIGKILL))
            again.wait_exit(again.runtime.store.get(survivor_id))
            again.run(_settle(again))
            assert survivor_id in seen
            assert again.runtime.store.get(survivor_id).exit_code == 137
        finally:
            again.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _settle(h: Harness) -> None:
    """Lets the loop run the exit watcher's callbacks."""
    await asyncio.sleep(0.1)


def test_interrupted_create_is_discarded_on_recovery() -> None:
    h = Harness()
    try:
        rec = h.create(h.config("sleep", "100000"))
        # Simulate a crash before create finished: the record still has created_at 0.
        h.runtime.store.save(dataclasses.replace(rec, created_at=0))
        h.runtime.close()
        h.loop.close()
        (h.dir / "exits" / ("f" * 64)).write_text("0")  # an exit file no record owns
        again = Harness(h.dir)
        assert again.runtime.store.get(rec.id) is None
        assert not Path(rec.bundle).exists()
        assert list((h.dir / "exits").iterdir()) == []  # conmon's exit for the discarded one, and the orphan
        assert not os.path.exists(f"/proc/{rec.pid}") or "Z" in open(f"/proc/{rec.pid}/stat").read().split(")")[1][:3]
        with pytest.raises(NotFound):
            again.run(again.runc.state(rec.id))
        h = again
    finally:
        h.close()


# How long the staged exit waits for the exit watcher to record it while runc answers.
WATCHER_WAIT = 3.0


@pytest.mark.parametrize("recorder", ["status poll", "exit watcher"])
def test_an_exit_while_an_unrecorded_start_is_adopted_is_recorded_once(monkeypatch: pytest.MonkeyPatch,
                                                                       recorder: str) -> None:
    """`runc start` ran but the crash came before its record: at the next start, recovery asks
    runc and adopts the start. The container exits while runc answers, and its exit is recorded
    then (by a status poll, or by the exit watcher's task when it can): the adoption never writes
    the container back as running, and the exit is told once, with the record that stays."""
    h = Harness()
    try:
        rec = h.create(h.config("sleep", "100000"))
        h.run(h.runc.start(rec.id))  # the start the record never got
        h.runtime.close()
        h.loop.close()
        staged: list[dict[str, Any]] = []
        stopped: list[ContainerRecord] = []

        def exit_while_runc_answers(rt: ContainerRuntime) -> None:
            told = asyncio.Event()

            def on_event(event: int, record: ContainerRecord) -> None:
                if event == api.CONTAINER_STOPPED_EVENT and record.id == rec.id:
                    stopped.append(record)
                    told.set()

            rt.subscribe(on_event)
            runc = rt.runtimes["runc"]
            answer = runc.state

            async def state(container_id: str, timeout: float = 30) -> dict[str, Any]:
                found = await answer(container_id, timeout)
                if container_id == rec.id and not staged:
                    staged.append(found)
                    await runc.kill(container_id, signal.SIGKILL)
                    assert await rt.monitor.exits.wait(container_id, 10) is not None
                    if recorder == "status poll":
                        rt.refresh(rt.store.get(container_id) or rec)
                    else:  # a watcher that records it before the adoption ends (it must not)
                        try:
                            await asyncio.wait_for(told.wait(), WATCHER_WAIT)
                        except TimeoutError:
                            pass
                return found

            monkeypatch.setattr(runc, "state", state)

        again = Harness(h.dir, before_open=exit_while_runc_answers)
        h = again
        assert [s["status"] for s in staged] == ["running"], "runc answered while the container ran"
        if recorder == "status poll":
            assert again.runtime.store.get(rec.id).state == CONTAINER_EXITED, "the adoption kept the exit"
        again.run(again.runtime.exit_recorded(again.runtime.store.get(rec.id)))
        final = again.get(rec.id)
        assert (final.state, final.exit_code) == (CONTAINER_EXITED, 137), final
        assert stopped == [final], stopped
        if recorder == "exit watcher":
            assert final.started_at > 0, "the start adopted first, the exit recorded after it"
    finally:
        h.close()


def test_dead_monitor_without_exit_file_reads_unknown() -> None:
    h = Harness()
    try:
        rec = h.start(h.create(h.config("sleep", "100000")))
        os.kill(rec.monitor_pid, signal.SIGKILL)
        h.run(h.runc.kill(rec.id, signal.SIGKILL))
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{rec.monitor_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        rec = h.get(rec.id)
        assert (rec.state, rec.exit_code, rec.reason) == (CONTAINER_EXITED, 255, "Unknown")
    finally:
        h.close()

