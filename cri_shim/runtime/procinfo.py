"""Process identity: a pid plus its start time, so a reused pid is never mistaken for ours."""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def alive(pid: int, started: int) -> bool:
    """The process started at `started` still runs (and is not a zombie)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[0] != "Z" and int(rest[19]) == started
