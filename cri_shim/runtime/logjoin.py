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
# Records of one chunk taken apart one by one (conmon's P records and the F records that end their
# lines, two for each of its reads that ended mid-line) before the rest is taken apart at once.
SCAN_APART = 64


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
        "\\r" before a newline dropped in one replace): only a record that may need joining (one
        holding " P ": every P record; any record while a stream has a partial line) is taken
        apart, so that a container writing lines costs per read, not per line. Output full of
        " P " would make that record by record: past SCAN_APART such records, the rest of the
        chunk is taken apart at once."""
        pos, apart = 0, 0
        tag = data.find(b" P ", 0, end)  # the next, -1: none
        while pos < end:
            if not any(self._pending.values()):
                if 0 <= tag < pos:
                    tag = data.find(b" P ", pos, end)
                start = end if tag < 0 else data.rfind(b"\n", 0, tag) + 1  # the record holding it
                if start > pos:
                    run = data[pos:start]
                    out.append(run.replace(b"\r\n", b"\n") if b"\r" in run else run)
                    pos = start
                if pos == end:
                    return
            if apart == SCAN_APART:
                self._records(data[pos:end].split(b"\n")[:-1], out)
                return
            stop = data.index(b"\n", pos, end)
            self._records([data[pos:stop]], out)
            pos, apart = stop + 1, apart + 1

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
