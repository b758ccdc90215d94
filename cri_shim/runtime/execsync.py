"""ExecSync: run a command in a running container and collect its output and exit code.

It uses a detached `runc exec` under execreaper (not conmon's exec mode), and the pid file
tells us the exec'd process's host pid. On timeout that process itself is killed with SIGKILL;
execreaper, its parent, reaps it and exits, so nothing is left behind in the container (critest
checks `pgrep sleep` afterwards), and the caller gets DeadlineExceeded.
stdout and stderr are read separately but share one budget, the gRPC message limit less room
for the rest of the reply: the answer always fits, so a command that prints too much still
reports its exit code, with its output truncated (kubelet's probes and CRI-O alike cap the
output and keep the exit code). Output beyond the budget is drained and dropped, so the
process never blocks on a full pipe; the truncation is logged.

The exec ends when execreaper exits, which is when the exec'd process exits (execproc): a
background child it leaves holding the pipes does not hold up the reply. What the pipes still give is read
for the drain timeout (runtime.drain_exec_sync_io_timeout_ms, containerd's
drain_exec_sync_io_timeout), never past the call's own timeout, then our ends are closed and the
exit code is reported with the output read so far; the child runs on in the container.

The process files, the kill and the reading of runc's outcome are shared with streaming exec
(cri_shim.runtime.execstream), which runs the same `runc exec` wired to a client instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.errors import DeadlineExceeded, Internal
from cri_shim.oci import values
from cri_shim.runtime.execproc import ExecProcess, reaped_command, spawn
from cri_shim.runtime.runc import Runc

log = logging.getLogger("cri_shim.runtime")

# What an ExecSyncResponse holds besides the output: two length-prefixed fields and an int32 exit
# code take at most 21 bytes; the rest is headroom.
RESPONSE_RESERVE = 4096
# How long runc gets to write the pid file when a timeout must kill the process.
PID_FILE_WAIT = 5.0


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


def output_limit(max_message_bytes: int) -> int:
    """How many bytes of stdout and stderr together an ExecSync reply of at most
    max_message_bytes can carry."""
    return max(0, max_message_bytes - RESPONSE_RESERVE)


class _Budget:
    """The bytes stdout and stderr may still keep between them, first come first kept."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.dropped = 0

    def take(self, chunk: bytes) -> bytes:
        kept = chunk[: self.left]
        self.left -= len(kept)
        self.dropped += len(chunk) - len(kept)
        return kept


async def _read_capped(stream: asyncio.StreamReader, budget: _Budget) -> bytes:
    buf = bytearray()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(buf)
        buf += budget.take(chunk)


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
    """The exec'd process's exit code from the runtime's or execreaper's (which pass it on,
    128+signal for a process killed by one); Internal when the runtime failed before the process
    existed (no pid file), with what it said."""
    if not pid_file.exists():
        raise Internal(f"exec failed: {runc_stderr.decode(errors='replace').strip()}")
    return 128 - returncode if returncode < 0 else returncode


async def kill_exec(pid_file: Path, proc: ExecProcess) -> None:
    """SIGKILL the exec'd process (found through its pid file), then make sure its parent (runc
    or execreaper) exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PID_FILE_WAIT
    while loop.time() < deadline and proc.returncode is None:
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
        await asyncio.wait_for(proc.exit(), PID_FILE_WAIT)
    except TimeoutError:
        proc.kill()
        await proc.exit()


def drain_time(drain: float | None, deadline: float | None, now: float) -> float | None:
    """How long the pipes are read after the exit: the drain timeout (None: until they close),
    cut at the call's deadline."""
    if deadline is None:
        return drain
    left = max(0.0, deadline - now)
    return left if drain is None else min(drain, left)


async def exec_sync(runc: Runc, container_id: str, bundle: Path, argv: list[str], timeout: float | None,
                    limit: int, drain: float | None) -> ExecResult:
    """Runs argv in the container, keeping at most limit bytes of its stdout and stderr together;
    timeout None or 0 waits for ever; drain bounds the reading of the pipes after the exit
    (None: until they close)."""
    if not argv:
        raise Internal("exec needs a command")
    loop = asyncio.get_running_loop()
    with process_files(bundle, argv) as (process_file, pid_file):
        deadline = loop.time() + timeout if timeout else None
        proc = await spawn(reaped_command(runc, container_id, process_file, pid_file))
        assert proc.stdout is not None and proc.stderr is not None
        budget = _Budget(limit)
        readers = [asyncio.ensure_future(_read_capped(s, budget)) for s in (proc.stdout, proc.stderr)]
        try:
            try:
                returncode = await asyncio.wait_for(proc.exit(), timeout or None)
            except TimeoutError:
                await kill_exec(pid_file, proc)
                raise DeadlineExceeded(f"command {argv!r} timed out after {timeout}s") from None
            except asyncio.CancelledError:
                await kill_exec(pid_file, proc)
                raise
            _, held = await asyncio.wait(readers, timeout=drain_time(drain, deadline, loop.time()))
            if held:
                log.debug("exec output still held open after the drain timeout, by a process the command left",
                          extra={"container": container_id})
        finally:
            proc.close()
            out, err = await asyncio.gather(*readers)
        exit_code = outcome(pid_file, returncode, err)
        if budget.dropped:
            log.warning("exec output truncated to fit the reply", extra={
                "container": container_id, "kept_bytes": limit, "dropped_bytes": budget.dropped})
        return ExecResult(stdout=out, stderr=err, exit_code=exit_code)
