"""An asyncio wrapper around the runc command line, one instance per runtime handler.

crun takes the same command line and is driven by the same class; where the two differ in
what they print (runc logs in logfmt or JSON, crun plain lines or JSON) the parsing below
reads both. Every call is a subprocess (never a fork from a thread, never preexec_fn); failures
become Internal errors carrying the runtime's own message, except where "already gone" must count as done
(delete of a deleted container, kill of a stopped one), which callers ask for explicitly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from cri_shim.errors import Internal, NotFound

log = logging.getLogger("cri_shim.runtime")

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
_GONE = ("does not exist", "not exist", "no such file")


class RuncError(Internal):
    """runc exited non-zero; the message holds its stderr."""

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr

    @property
    def gone(self) -> bool:
        """The container (or its process) no longer exists."""
        low = self.stderr.lower()
        return any(text in low for text in _GONE) or "container not running" in low or "process already finished" in low


# runc's logfmt lines: time="…" level=error msg="…" (the msg quoted with backslash escapes).
_LOGFMT = re.compile(r'level=(\w+)\s+msg="((?:[^"\\]|\\.)*)"')


def _unquote(quoted: str) -> str:
    """A logfmt value's text: Go quotes it with JSON-compatible escapes for what runc writes."""
    try:
        return str(json.loads(f'"{quoted}"'))
    except ValueError:
        return quoted


def error_message(text: str) -> str:
    """runc's error, without the JSON or logfmt framing it writes: the messages of its error
    lines when it marked any (warnings such as "cannot toggle freezer" are dropped), else every
    line's message. Also for what conmon relays from runc."""
    found: list[tuple[str, str]] = []
    for line in text.strip().splitlines():
        try:
            entry = json.loads(line)
            found.append((str(entry.get("level", "")), str(entry.get("msg", line))))
            continue
        except (ValueError, AttributeError):
            pass
        match = _LOGFMT.search(line)
        found.append((match[1], _unquote(match[2])) if match else ("", line))
    errors = [msg for level, msg in found if level in ("error", "fatal")]
    return "; ".join(errors or [msg for _, msg in found])


async def bounded(proc: asyncio.subprocess.Process, work: Awaitable[T], timeout: float, what: str) -> T:
    """work's result, or Internal once timeout has passed, with the runtime killed and reaped."""
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        try:
            proc.kill()
        except ProcessLookupError:  # it exited as the timeout passed
            pass
        await proc.wait()
        raise Internal(f"{what} timed out after {timeout}s") from None


class Runc:
    """runc with its own --root (state directory) and cgroup driver."""

    def __init__(self, binary: str, root: Path, systemd_cgroup: bool = False) -> None:
        # conmon wants an absolute runtime path; resolve a bare name through PATH once.
        self.binary = shutil.which(binary) or binary
        # How errors name it: "runc", "crun".
        self.name = os.path.basename(self.binary)
        self.root = root
        self.systemd_cgroup = systemd_cgroup

    def global_args(self) -> list[str]:
        """Arguments before the subcommand (also given to conmon as --runtime-arg)."""
        args = [f"--root={self.root}"]
        if self.systemd_cgroup:
            args.append("--systemd-cgroup")
        return args

    def command(self, *args: str) -> list[str]:
        return [self.binary, *self.global_args(), *args]

    async def run(self, *args: str, stdin: bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Runs one runc subcommand to completion; its stdout, or RuncError."""
        proc = await asyncio.create_subprocess_exec(
            *self.command(*args),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await bounded(proc, proc.communicate(stdin), timeout, f"{self.name} {args[0]}")
        if proc.returncode != 0:
            message = error_message(err.decode(errors="replace"))
            raise RuncError(f"{self.name} {args[0]} failed: {message}", message)
        return out

    async def run_detached(self, container_id: str, bundle: Path, pid_file: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        """`run --detach`: a container that needs no monitor. It keeps runc's stdio, and runc's
        error comes from its log file in the bundle. That stdio is never the host's /dev/null,
        which a runtime may chown to the container's user (crun does) and the container's root
        could chmod: stdin is a pipe at EOF, stdout and stderr a pipe whose reading end is
        closed once runc has exited (nothing reads the container's output; a write fails)."""
        log_file = bundle / "runc.log"
        in_read, in_write = os.pipe2(os.O_CLOEXEC)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        os.close(in_write)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *self.global_args(), "--log", str(log_file), "--log-format", "json",
                "run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file), container_id,
                stdin=in_read, stdout=out_write, stderr=out_write,
            )
        finally:
            os.close(in_read)
            os.close(out_write)
        try:
            await bounded(proc, proc.wait(), timeout, f"{self.name} run")
        finally:
            os.close(out_read)
        if proc.returncode != 0:
            try:
                message = error_message(log_file.read_text(errors="replace")[-4096:])
            except OSError:
                message = f"exit status {proc.returncode}"
            raise RuncError(f"{self.name} run failed: {message}", message)

    async def start(self, container_id: str) -> None:
        await self.run("start", container_id)

    async def state(self, container_id: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The runtime's state of the container; NotFound when the runtime does not know it."""
        try:
            return json.loads(await self.run("state", container_id, timeout=timeout))
        except RuncError as exc:
            if exc.gone:
                raise NotFound(f"container {container_id} is not known to {self.name}") from None
            raise

    async def kill(self, container_id: str, signal: int, all_processes: bool = False) -> bool:
        """Sends a signal; False when there was no process left to signal."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signal)]
        try:
            await self.run(*args)
        except RuncError as exc:
            if exc.gone:
                return False
            raise
        return True

    async def delete(self, container_id: str) -> None:
        """delete --force: kills what is left and removes runc's state; absent is fine, and with
        no state directory there is nothing the runtime could find to delete (a container
        deleted at its exit is not asked again)."""
        if not (self.root / container_id).exists():
            return
        try:
            await self.run("delete", "--force", container_id)
        except RuncError as exc:
            if not exc.gone:
                raise

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Applies new cgroup resources (UpdateContainerResources)."""
        await self.run("update", "--resources", "-", container_id, stdin=json.dumps(resources).encode())

    def exec_command(self, container_id: str, process_file: Path, pid_file: Path, console_socket: str = "") -> list[str]:
        """argv of a detached `runc exec` for a process.json: runc gives the process its own
        stdio, or for a terminal process sends the pty master to console_socket, and exits once
        the process has started (execproc.reaped_command makes its exit the process's)."""
        console = ["--console-socket", console_socket] if console_socket else []
        return self.command("exec", "--detach", *console, "--process", str(process_file), "--pid-file", str(pid_file),
                            container_id)
