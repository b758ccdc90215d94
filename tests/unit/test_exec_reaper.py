"""execreaper, the subreaper an exec'd process exits to, run against stand-ins for a detached
`runc exec`: shell scripts that start a process, write its pid file and exit at once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cri_shim import config
from cri_shim.runtime import execreaper

pytestmark = pytest.mark.unit


def reaped(tmp_path: Path, script: str) -> subprocess.CompletedProcess[bytes]:
    """Runs execreaper around `sh -c script`, where $PIDFILE names the pid file to write."""
    pid_file = tmp_path / "pid"
    runc = ["sh", "-c", script.replace("$PIDFILE", str(pid_file))]
    return subprocess.run([sys.executable, "-I", "-S", execreaper.__file__, str(pid_file), *runc],
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("body, code", [("exit 7", 7), ("exit 0", 0), ("kill -9 $$", 137)])
def test_exits_with_the_status_of_the_process_the_runtime_left(tmp_path: Path, body: str, code: int) -> None:
    # The "runtime" exits first; its child, the process, is reparented to execreaper.
    answer = reaped(tmp_path, f"sh -c 'sleep 0.2; echo out; {body}' & echo $! > $PIDFILE")
    assert (answer.returncode, answer.stdout) == (code, b"out\n"), answer.stderr


def test_a_runtime_failure_is_passed_on(tmp_path: Path) -> None:
    answer = reaped(tmp_path, "echo no such container >&2; exit 3")
    assert (answer.returncode, answer.stderr) == (3, b"no such container\n")


def test_the_process_own_children_are_not_waited_for(tmp_path: Path) -> None:
    # The process's background child holds stdout; execreaper exits with the process anyway.
    # The process outlives the stand-in runtime (sh), as with runc: an sh still there when it
    # exited could reap it first and leave execreaper nothing to wait for.
    pid_file = tmp_path / "pid"
    script = (f"(sleep 600 & echo $! > {tmp_path}/child; while kill -0 $$ 2>/dev/null; do sleep 0.01; done; exit 4) & "
              f"echo $! > {pid_file}")
    proc = subprocess.Popen([sys.executable, "-I", "-S", execreaper.__file__, str(pid_file), "sh", "-c", script],
                            stdout=subprocess.PIPE)
    try:
        assert proc.wait(timeout=60) == 4, "execreaper waited for the process's child"
    finally:
        assert proc.stdout is not None
        proc.stdout.close()
        child = tmp_path / "child"
        if child.exists():
            subprocess.run(["kill", child.read_text().strip()], check=False)


def test_a_negative_drain_timeout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[runtime]\ndrain_exec_sync_io_timeout_ms = -1\n")
    with pytest.raises(config.ConfigError, match=re.escape("runtime.drain_exec_sync_io_timeout_ms")):
        config.load(path)
