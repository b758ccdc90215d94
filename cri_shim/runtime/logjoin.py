"""Joining conmon's log records into the lines kubelet's log reader expects.

conmon writes one record for every read of the container's stdout or stderr
(`<timestamp> <stream> <P|F> <content>`, P when the read did not end a line), so a line written a
few bytes at a time becomes thousands of P records. The Joiner reads that record stream and
writes what containerd writes: one F record per line, a line longer than the maximum line size
split into P records of exactly that size and a final F, unterminated output flushed as a P
record at the end. A trailing "\\r" before the newline is dropped, as containerd's line reader
drops it. Each stream (stdout, stderr) keeps a partial line of its own, so interleaved output
never mixes.

A record keeps the timestamp conmon gave the read that completed it (RFC 3339 with nanoseconds).
Memory is bounded by the maximum line size per stream, plus one incomplete record (conmon reads
8 KiB at a time; anything past RECORD_MAX without a newline is not conmon's and is dropped).
"""

from __future__ import annotations

# conmon reads at most this much of a container's output at a time (its STDIO_BUF_SIZE), so that
# no record it writes holds more; a record adds a timestamp, stream and tag.
CONMON_READ_MAX = 8192
RECORD_MAX = 64 * 1024
# What containerd's max_container_log_line_size of -1 becomes here: the daemon holds a partial
# line per stream in memory, so "unlimited" is this much.
LINE_SIZE_CAP = 1024 * 1024
# Records of one chunk looked at one by one (conmon's P records and the records that end their
# lines, two for each of its reads that ended mid-line; lines holding " P ") before the rest of
# the chunk is taken apart at once.
SCAN_APART = 64
# "P"s of the content looked past before a search for " P " as a whole takes over.
TAG_TRIES = 8


class Joiner:
    """Turns conmon's records, fed in chunks of any size, into joined CRI log records."""

    __slots__ = ("max_line", "_verbatim", "_rest", "_pending", "_stamp")

    def __init__(self, max_line: int) -> None:
        self.max_line = LINE_SIZE_CAP if max_line <= 0 else min(max_line, LINE_SIZE_CAP)
        # No record conmon writes is longer than its read buffer: with a maximum at least that
        # large, an F record alone (no partial line before it) passes unchanged but for its "\r".
        self._verbatim = self.max_line >= CONMON_READ_MAX
        self._rest = b""  # an incomplete record at the end of the last chunk
        self._pending: dict[bytes, bytearray] = {}  # stream -> the partial line so far
        self._stamp: dict[bytes, bytes] = {}  # stream -> timestamp of the last record added to it

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete records the chunk finishes (each ending in a newline)."""
        data = self._rest + chunk if self._rest else chunk
        end = data.rfind(b"\n") + 1
        self._rest = data[end:]
        if len(self._rest) > RECORD_MAX:
            self._rest = b""
        if not end:
            return []
        out: list[bytes] = []
        if self._verbatim:
            self._scan(data, end, out)
        else:
            self._records(data[:end].split(b"\n")[:-1], out)
        return out

    def _scan(self, data: bytes, end: int, out: list[bytes]) -> None:
        """The records in data[:end], with runs of whole lines passed on as one slice each (their
        "\\r" before a newline dropped in one replace): only P records, and any record while a
        stream has a partial line, are taken apart, so that a container writing lines costs per
        read, not per line. A P record is found by its " P " after the line's first space; a
        " P " further on is content. Past SCAN_APART records looked at one by one (a container
        writing a few bytes at a time, or " P " on every line), the rest is taken apart at once."""
        pos = look = 0  # the first record not passed on yet; where to look for a P record from
        budget = SCAN_APART
        while pos < end:
            if not budget:
                self._records(data[pos:end].split(b"\n")[:-1], out)
                return
            if not any(self._pending.values()):
                tag = _find_tag(data, look, end)
                start = end if tag < 0 else data.rfind(b"\n", 0, tag) + 1
                if start < end and data.count(b" ", start, tag) != 1:
                    look = data.index(b"\n", tag, end) + 1  # a whole line's content: it stays in the run
                    budget -= 1
                    continue
                if start > pos:
                    run = data[pos:start]
                    out.append(run.replace(b"\r\n", b"\n") if b"\r" in run else run)
                    pos = start
                if pos == end:
                    return
            stop = data.index(b"\n", pos, end)
            self._records([data[pos:stop]], out)
            pos = look = stop + 1
            budget -= 1

    def finish(self) -> list[bytes]:
        """At the end of the stream: each stream's unterminated line as a P record."""
        out: list[bytes] = []
        if self._rest:
            record, self._rest = self._rest, b""
            self._records([record], out, ended=False)
        for stream, pending in self._pending.items():
            if pending:
                out.append(b"%s %s P %s\n" % (self._stamp[stream], stream, pending))
        self._pending.clear()
        return out

    def _records(self, records: list[bytes], out: list[bytes], ended: bool = True) -> None:
        pending_map, max_line = self._pending, self.max_line
        for record in records:
            parts = record.split(b" ", 3)
            if len(parts) != 4:
                continue  # not conmon's format: nothing to join it with
            stamp, stream, tag, content = parts
            full = tag == b"F" and ended
            pending = pending_map.get(stream)
            if full and not pending and len(content) <= max_line and not content.endswith(b"\r"):
                out.append(record + b"\n")  # a whole line in one read: as conmon wrote it
                continue
            if pending is None:
                pending = pending_map[stream] = bytearray()
            pending += content
            self._stamp[stream] = stamp
            if full and pending.endswith(b"\r"):
                del pending[-1:]
            while len(pending) > max_line:
                out.append(b"%s %s P %s\n" % (stamp, stream, pending[:max_line]))
                del pending[:max_line]
            if full:
                out.append(b"%s %s F %s\n" % (stamp, stream, pending))
                pending.clear()


def _find_tag(data: bytes, pos: int, end: int) -> int:
    """Where the next " P " in data[pos:end] starts, -1 when none does. A search for the one byte
    "P" (memchr) runs many times faster than one for the three; it is kept while the content
    holds few "P"s of its own."""
    for _ in range(TAG_TRIES):
        found = data.find(b"P", pos, end)
        if found < 0:
            return -1
        if data[found - 1:found + 2] == b" P ":
            return found - 1
        pos = found + 1
    return data.find(b" P ", pos, end)
