"""Wrapper binaries for runc (or crun) and conmon that inject faults at a chosen step, for fault tests.

The daemon (or the container harness) is configured with a wrapper's path instead of the real
binary. A wrapper reads its control file on every call: `<step> <mode>` lines, where step is a
runc subcommand (create, start, kill, delete, run, ...) or `run` for conmon, and mode is
  fail   - exit 1 with "injected <tool> failure at <step>" on stderr; nothing was done;
  crash  - runc: run the real command, then die by SIGKILL (the work is done, the answer lost);
           conmon: die by SIGKILL before starting (so before it writes its pid file);
  hang   - add the wrapper's pid to hung.pid, then sleep until killed; nothing was done (every
           call of the step hangs, so several may: kill_hung ends them all).
Any other call runs the real binary. Every call's step is appended to calls.log. Nothing here
touches processes or paths outside the wrapper's own directory.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

RUNC_STEPS = ("create", "start", "kill", "delete", "state", "exec", "update", "run", "pause", "resume", "ps", "features")

RUNC = """#!/bin/sh
dir=%(dir)s
step=other
for a in "$@"; do
    case "$a" in %(steps)s) step=$a; break ;; esac
done
echo "$step" >> "$dir/calls.log"
mode=$(awk -v s="$step" '$1 == s { print $2 }' "$dir/control" 2>/dev/null)
case "$mode" in
    fail) echo "injected %(tool)s failure at $step" >&2; exit 1 ;;
    hang) echo $$ >> "$dir/hung.pid"; while :; do sleep 1; done ;;
    crash) %(real)s "$@" >/dev/null 2>&1 </dev/null; kill -9 $$ ;;
esac
exec %(real)s "$@"
"""

SIMPLE = """#!/bin/sh
dir=%(dir)s
case "$1" in --version|-v) exec %(real)s "$@" ;; esac
echo run >> "$dir/calls.log"
mode=$(awk '$1 == "run" { print $2 }' "$dir/control" 2>/dev/null)
case "$mode" in
    fail) echo "injected %(tool)s failure at run" >&2; exit 1 ;;
    hang) echo $$ >> "$dir/hung.pid"; while :; do sleep 1; done ;;
    crash) kill -9 $$ ;;
esac
exec %(real)s "$@"
"""


class FaultyBinary:
    """One wrapper (runc, crun or conmon) in its own directory, with its control file and call log."""

    def __init__(self, base: Path, tool: str) -> None:
        if tool not in ("runc", "crun", "conmon"):
            raise ValueError(tool)
        self.dir = base / f"fault-{tool}"
        self.dir.mkdir(parents=True, exist_ok=True)
        real = shutil.which(tool)
        if real is None:
            raise FileNotFoundError(tool)
        template = SIMPLE if tool == "conmon" else RUNC
        self.path = self.dir / tool
        self.path.write_text(template % {"dir": self.dir, "real": real, "tool": tool, "steps": "|".join(RUNC_STEPS)})
        self.path.chmod(0o755)
        self.clear()

    def inject(self, step: str, mode: str) -> None:
        """Arms one fault (replacing any other), and forgets earlier calls."""
        assert mode in ("fail", "crash", "hang"), mode
        (self.dir / "control").write_text(f"{step} {mode}\n")
        (self.dir / "calls.log").unlink(missing_ok=True)

    def clear(self) -> None:
        (self.dir / "control").write_text("")

    def calls(self) -> list[str]:
        log = self.dir / "calls.log"
        return log.read_text().split() if log.exists() else []

    def wait_hung(self, timeout: float = 30) -> int:
        return wait_hung(self.dir, self.path.name, timeout)

    def kill_hung(self) -> None:
        kill_hung(self.dir)


def wait_hung(directory: Path, what: str, timeout: float = 30) -> int:
    """The pid the first wrapper in directory to reach its fault point wrote to hung.pid."""
    pid_file = directory / "hung.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        if text:
            return int(text.split()[0])
        time.sleep(0.02)
    raise TimeoutError(f"{what} never reached its fault point")


def kill_hung(directory: Path) -> None:
    """Ends every hanging wrapper of directory (its own processes, started for this test)."""
    pid_file = directory / "hung.pid"
    if pid_file.exists():
        for pid in pid_file.read_text().split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        pid_file.unlink()
