"""ExecSync: run a command in a running container and collect its output and exit code.

It uses `runc exec` directly (not conmon's exec mode): one process fewer per probe, and the
pid file tells us the exec'd process's host pid. On timeout that process itself is killed
with SIGKILL; runc, its parent, reaps it and exits, so nothing is left behind in the
container (critest checks `pgrep sleep` afterwards), and the caller gets DeadlineExceeded.
stdout and stderr are read separately and each capped at 16 MiB (the gRPC message limit);
output beyond the cap is drained and dropped so the process never blocks on a full pipe.

The process files, the kill and the reading of runc's outcome are shared with streaming exec
(cri_shim.runtime.execstream), which runs the same `runc exec` wired to a client instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.errors import DeadlineExceeded, Internal
from cri_shim.oci import values
from cri_shim.runtime.runc import Runc

MAX_OUTPUT = 16 * 1024 * 1024
# After the process exits, how long background children may keep the pipes open.
DRAIN_GRACE = 0.5
# How long runc gets to write the pid file when a timeout must kill the process.
PID_FILE_WAIT = 5.0


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    buf = bytearray()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(buf)
        if len(buf) < limit:
            buf += chunk[: limit - len(buf)]


def exec_process(spec_process: dict[str, Any], argv: list[str], tty: bool = False) -> dict[str, Any]:
    """The process.json for an exec: the container's process (user, env, caps, cwd) with argv."""
    proc = dict(spec_process)
    proc["args"] = list(argv)
    proc["terminal"] = tty
    proc.pop("oomScoreAdj", None)
    return proc


def write_process(bundle: Path, argv: list[str], tty: bool = False) -> tuple[Path, Path]:
    """Writes an exec's process.json next to config.json; returns it and its pid file path."""
    spec = json.loads((bundle / "config.json").read_text())
    values.check_exec(argv, spec["process"].get("env", []))
    name = f"exec-{uuid.uuid4().hex[:12]}"
    process_file = bundle / f"{name}.json"
    process_file.write_text(json.dumps(exec_process(spec["process"], argv, tty)))
    return process_file, bundle / f"{name}.pid"


@contextlib.contextmanager
def process_files(bundle: Path, argv: list[str], tty: bool = False) -> Iterator[tuple[Path, Path]]:
    """write_process's files for the length of one exec, removed afterwards."""
    process_file, pid_file = write_process(bundle, argv, tty)
    try:
        yield process_file, pid_file
    finally:
        process_file.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)


def outcome(pid_file: Path, returncode: int, runc_stderr: bytes) -> int:
    """The exec'd process's exit code from runc's (which passes it on, 128+signal for a process
    killed by one); Internal when runc failed before the process existed (no pid file)."""
    if not pid_file.exists():
        raise Internal(f"runc exec failed: {runc_stderr.decode(errors='replace').strip()}")
    return 128 - returncode if returncode < 0 else returncode


async def kill_exec(pid_file: Path, runc_proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the exec'd process (found through its pid file), then make sure runc exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PID_FILE_WAIT
    while loop.time() < deadline and runc_proc.returncode is None:
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            await asyncio.sleep(0.01)
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    try:
        await asyncio.wait_for(runc_proc.wait(), PID_FILE_WAIT)
    except TimeoutError:
        runc_proc.kill()
        await runc_proc.wait()


async def exec_sync(runc: Runc, container_id: str, bundle: Path, argv: list[str], timeout: float | None) -> ExecResult:
    """Runs argv in the container; timeout None or 0 waits for ever."""
    if not argv:
        raise Internal("exec needs a command")
    with process_files(bundle, argv) as (process_file, pid_file):
        proc = await asyncio.create_subprocess_exec(
            *runc.exec_command(container_id, process_file, pid_file),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        readers = [asyncio.ensure_future(_read_capped(s, MAX_OUTPUT)) for s in (proc.stdout, proc.stderr)]
        try:
            returncode = await asyncio.wait_for(proc.wait(), timeout or None)
        except TimeoutError:
            await kill_exec(pid_file, proc)
            for r in readers:
                r.cancel()
            raise DeadlineExceeded(f"command {argv!r} timed out after {timeout}s") from None
        except asyncio.CancelledError:
            await kill_exec(pid_file, proc)
            raise
        done, pending = await asyncio.wait(readers, timeout=DRAIN_GRACE)
        for r in pending:
            r.cancel()
        out = readers[0].result() if readers[0] in done else b""
        err = readers[1].result() if readers[1] in done else b""
        return ExecResult(stdout=out, stderr=err, exit_code=outcome(pid_file, returncode, err))
