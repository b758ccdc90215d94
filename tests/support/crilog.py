"""A parser for CRI container log files (`<RFC3339Nano> <stdout|stderr> <P|F> <content>`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Entry:
    timestamp: datetime
    nanos: int
    stream: str
    partial: bool
    content: str


def parse_timestamp(text: str) -> tuple[datetime, int]:
    """An RFC 3339 timestamp with up to nanosecond precision: (datetime to the second, nanoseconds)."""
    m = _TIMESTAMP.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    zone = "+00:00" if m[4] == "Z" else m[4]
    nanos = int((m[3] or "0").ljust(9, "0"))
    return datetime.fromisoformat(m[1] + zone), nanos


def parse_line(line: str) -> Entry:
    """One log line; raises ValueError when it is not in the CRI format."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3:
        raise ValueError(f"not a CRI log line: {line!r}")
    ts, stream, tags = parts[:3]
    content = parts[3] if len(parts) == 4 else ""
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"unknown stream {stream!r} in {line!r}")
    tag = tags.split(":", 1)[0]
    if tag not in ("P", "F"):
        raise ValueError(f"unknown tag {tags!r} in {line!r}")
    when, nanos = parse_timestamp(ts)
    return Entry(when, nanos, stream, tag == "P", content)


def parse(path: Path) -> list[Entry]:
    """Every entry of a log file."""
    return [parse_line(line) for line in path.read_text().splitlines(keepends=True) if line.strip()]


def written(path: Path) -> list[Entry]:
    """The entries of a log file a monitor is still writing: only its finished lines (none when the
    file does not exist, or was just replaced)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [parse_line(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


def messages(entries: list[Entry], stream: str | None = None) -> list[str]:
    """Whole lines, partial chunks joined with the entry that completes them."""
    out: list[str] = []
    pending: dict[str, str] = {}
    for e in entries:
        if stream and e.stream != stream:
            continue
        text = pending.pop(e.stream, "") + e.content
        if e.partial:
            pending[e.stream] = text
        else:
            out.append(text)
    out.extend(pending.values())
    return out
