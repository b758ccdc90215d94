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


class Joiner:
    """Turns conmon's records, fed in chunks of any size, into joined CRI log records."""

    __slots__ = ("max_line", "_verbatim", "_rest", "_pending", "_stamp")

    def __init__(self, max_line: int) -> None:
        self.max_line = LINE_SIZE_CAP if max_line <= 0 else min(max_line, LINE_SIZE_CAP)
        # No record conmon writes is longer than its read buffer: with a maximum at least that
        # large, a chunk of F records alone passes through unchanged.
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
        whole = data[:end]
        if self._verbatim and not any(self._pending.values()) and b" P " not in whole and b"\r\n" not in whole:
            return [whole]  # whole lines only, each read by conmon at once: as conmon wrote them
        out: list[bytes] = []
        self._records(whole.split(b"\n")[:-1], out)
        return out

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
