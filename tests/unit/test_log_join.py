"""Joining conmon's log records into lines (cri_shim.runtime.logjoin), as containerd writes them."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from cri_shim.runtime import logfile
from cri_shim.runtime.logcopy import LogCopier, _Pipe
from cri_shim.runtime.logjoin import LINE_SIZE_CAP, Joiner

pytestmark = pytest.mark.unit

T1, T2, T3 = b"2026-01-01T00:00:01.000000001+00:00", b"2026-01-01T00:00:02.000000002+00:00", b"2026-01-01T00:00:03.5+00:00"


def rec(stamp: bytes, stream: str, tag: str, content: bytes) -> bytes:
    return b"%s %s %s %s\n" % (stamp, stream.encode(), tag.encode(), content)


def run(joiner: Joiner, *chunks: bytes) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out += joiner.feed(chunk)
    return [line + b"\n" for line in b"".join(out).split(b"\n")[:-1]]


def test_partial_reads_become_one_full_line_stamped_when_it_ended() -> None:
    j = Joiner(16384)
    chunks = [rec(T1, "stdout", "P", b"x") for _ in range(16383)] + [rec(T2, "stdout", "F", b"")]
    assert run(j, b"".join(chunks)) == [rec(T2, "stdout", "F", b"x" * 16383)]
    assert run(j, rec(T1, "stdout", "P", b"a"), rec(T3, "stdout", "F", b"b")) == [rec(T3, "stdout", "F", b"ab")]
    assert j.finish() == []


def test_records_split_anywhere_between_chunks() -> None:
    data = rec(T1, "stdout", "P", b"he said ") + rec(T2, "stdout", "F", b"hello world") + rec(T3, "stderr", "F", b"e")
    for cut in range(len(data) + 1):
        j = Joiner(16384)
        assert run(j, data[:cut], data[cut:]) == [rec(T2, "stdout", "F", b"he said hello world"), rec(T3, "stderr", "F", b"e")]


def test_a_line_past_the_maximum_is_split_into_partials_of_that_size() -> None:
    j = Joiner(10)
    out = run(j, rec(T1, "stdout", "P", b"a" * 8), rec(T2, "stdout", "P", b"b" * 8), rec(T3, "stdout", "F", b"c" * 9))
    assert out == [rec(T2, "stdout", "P", b"a" * 8 + b"bb"), rec(T3, "stdout", "P", b"b" * 6 + b"cccc"),
                   rec(T3, "stdout", "F", b"c" * 5)]
    # Exactly the maximum is one full line, as containerd's reader makes it.
    assert run(Joiner(10), rec(T1, "stdout", "F", b"z" * 10)) == [rec(T1, "stdout", "F", b"z" * 10)]


def test_streams_keep_their_own_partial_lines() -> None:
    j = Joiner(16384)
    out = run(j, rec(T1, "stdout", "P", b"a"), rec(T1, "stderr", "P", b"b"), rec(T2, "stdout", "P", b"c"),
              rec(T2, "stderr", "F", b"d"), rec(T3, "stdout", "F", b"e"))
    assert out == [rec(T2, "stderr", "F", b"bd"), rec(T3, "stdout", "F", b"ace")]


def test_the_end_flushes_unfinished_lines_as_partials() -> None:
    j = Joiner(16384)
    assert run(j, rec(T1, "stdout", "P", b"out"), rec(T2, "stderr", "P", b"err"), rec(T3, "stdout", "F", b"whole"),
               rec(T3, "stdout", "P", b"tail")) == [rec(T3, "stdout", "F", b"outwhole")]
    assert sorted(j.finish()) == sorted([rec(T3, "stdout", "P", b"tail"), rec(T2, "stderr", "P", b"err")])
    # A record cut short by the end is kept as a partial.
    j = Joiner(16384)
    assert j.feed(rec(T1, "stdout", "F", b"cut")[:-3]) == []
    assert j.finish() == [rec(T1, "stdout", "P", b"c")]


def test_a_carriage_return_before_the_newline_is_dropped() -> None:
    j = Joiner(16384)
    assert run(j, rec(T1, "stdout", "F", b"tty\r"), rec(T2, "stdout", "P", b"a\r"), rec(T3, "stdout", "F", b"")) == [
        rec(T1, "stdout", "F", b"tty"), rec(T3, "stdout", "F", b"a")]
    assert run(j, rec(T1, "stdout", "F", b"in\rside")) == [rec(T1, "stdout", "F", b"in\rside")]
    # A terminal's lines, each read whole, still pass on together.
    tty = b"".join(rec(T1, "stdout", "F", b"line %d\r" % i) for i in range(100))
    assert j.feed(tty) == [tty.replace(b"\r\n", b"\n")]


def test_whole_lines_pass_through_unchanged_and_bad_records_are_skipped() -> None:
    j = Joiner(16384)
    lines = b"".join(rec(T1, "stdout", "F", b"line %d" % i) for i in range(100))
    assert j.feed(lines) == [lines]
    tricky = b"".join(rec(T1, "stdout", "F", b"line %d with a P in it" % i) for i in range(100))
    assert b"".join(j.feed(tricky)) == tricky
    # A line that is no record (never conmon's) is skipped while lines are joined.
    assert run(j, rec(T1, "stdout", "P", b"o"), b"garbage\n", rec(T2, "stdout", "F", b"k")) == [rec(T2, "stdout", "F", b"ok")]


def test_memory_is_bounded_by_the_maximum_per_stream() -> None:
    j = Joiner(16384)
    chunk = b"".join(rec(T1, s, "P", b"y" * 8192) for s in ("stdout", "stderr"))
    emitted = 0
    for _ in range(1000):  # 16 MiB without a newline
        emitted += sum(len(r) for r in j.feed(chunk))
        assert all(len(p) <= 16384 for p in j._pending.values())
    assert emitted > 2 * 1000 * 8192 - 2 * 16384
    assert Joiner(-1).max_line == Joiner(10 * LINE_SIZE_CAP).max_line == LINE_SIZE_CAP
    # Something without newlines that is not conmon's is dropped past the bound.
    j = Joiner(16384)
    j.feed(b"x" * (128 * 1024))
    assert j._rest == b""


def test_the_size_cap_holds_when_one_chunk_of_whole_lines_passes_through(tmp_path: Path) -> None:
    """A read of many whole lines leaves the Joiner as one element; with runtime.log_size_max_bytes
    the log is started afresh between two of its records, never past the cap."""
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        pipe = _Pipe(container_id="c", fifo=-1, ack=-1, joiner=Joiner(16384), path=str(tmp_path / "app.log"),
                     directory=directory, name="app.log", file=logfile.open_fresh(directory, "app.log", "app.log"))
        lines = [rec(T1, "stdout", "F", b"line %03d" % i) for i in range(40)]
        chunk = b"".join(lines)
        assert pipe.joiner.feed(chunk) == [chunk]  # passed through whole
        LogCopier(16384, size_max=300)._write(pipe, [chunk])
        os.close(pipe.file)
        written = (tmp_path / "app.log").read_bytes()
        assert 0 < len(written) <= 300 and chunk.endswith(written) and written.startswith(T1)
    finally:
        os.close(directory)


def joined(records: list[bytes], max_line: int) -> tuple[bytes, list[bytes]]:
    """What the Joiner must make of conmon's records, taken one at a time: each stream's content
    gathered until an F, a "\\r" before the newline dropped, P records of max_line bytes split off;
    and the P records the end flushes."""
    out: list[bytes] = []
    pending: dict[bytes, tuple[bytes, bytes]] = {}
    for record in records:
        stamp, stream, tag, content = record.rstrip(b"\n").split(b" ", 3)
        line = pending.pop(stream, (b"", b""))[1] + content
        if tag == b"F" and line.endswith(b"\r"):
            line = line[:-1]
        while len(line) > max_line:
            out.append(b"%s %s P %s\n" % (stamp, stream, line[:max_line]))
            line = line[max_line:]
        if tag == b"F":
            out.append(b"%s %s F %s\n" % (stamp, stream, line))
        else:
            pending[stream] = (stamp, line)
    return b"".join(out), [b"%s %s P %s\n" % (stamp, stream, line) for stream, (stamp, line) in pending.items() if line]


CONTENTS = [b"", b"plain line", b"a P b", b" P ", b"P", b"tty\r", b"in\rside", b"\r", b"\x00nul\x00 P \x00",
            b"0123456789" * 10, b"y" * 8192, b"stdout P x", b"\rP ", b"a\r\r", b"\r\r"]


@pytest.mark.parametrize("seed", range(40))
def test_any_mix_of_records_in_any_chunks_is_joined_as_record_by_record(seed: int) -> None:
    """Runs of whole lines pass on as slices and only records that may need joining are taken apart:
    the result is what joining every record alone makes, whatever the content (" P ", "\\r", NUL)
    and however the reads cut the records."""
    rnd = random.Random(seed)
    max_line = rnd.choice([8192, 8193, 16384, LINE_SIZE_CAP])
    records = [rec(rnd.choice([T1, T2, T3]), rnd.choice(["stdout", "stdout", "stderr"]), rnd.choice("FFFFP"),
                   rnd.choice(CONTENTS)) for _ in range(rnd.randrange(1, 1500))]
    data = b"".join(records)
    j = Joiner(max_line)
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = rnd.choice([1, 7, 100, 4096, 65536, 1 << 20])
        out += j.feed(data[pos:pos + size])
        pos += size
    whole, flushed = joined(records, max_line)
    assert b"".join(out) == whole
    assert sorted(j.finish()) == sorted(flushed)


def capped(tmp_path: Path, size_max: int, *chunks: bytes, fail_restart: bool = False) -> list[bytes]:
    """The files a log capped at runtime.log_size_max_bytes is written as, oldest first, given
    chunks as the Joiner passes them on (or, when starting afresh fails, the one file written)."""
    files: list[bytes] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir(parents=True)

    class Observed(LogCopier):
        def _restart_file(self, pipe: _Pipe) -> None:
            if not fail_restart:
                files.append((log_dir / "app.log").read_bytes())
            super()._restart_file(pipe)

    directory = os.open(log_dir, os.O_RDONLY | os.O_DIRECTORY)
    pipe = _Pipe(container_id="c", fifo=-1, ack=-1, joiner=Joiner(16384), path=str(log_dir / "app.log"),
                 directory=directory, name="app.log", file=logfile.open_fresh(directory, "app.log", "app.log"))
    try:
        if fail_restart:  # no new file can be made in a directory that is gone
            (log_dir / "app.log").rename(tmp_path / "app.log")
            log_dir.rmdir()
        copier = Observed(16384, size_max)
        for chunk in chunks:
            copier._write(pipe, [chunk])
        files.append((tmp_path if fail_restart else log_dir).joinpath("app.log").read_bytes())
    finally:
        os.close(pipe.file)
        os.close(directory)
    return files


def hundred(i: int, fill: bytes = b"x") -> bytes:
    """A record of exactly 100 bytes."""
    head = rec(T1, "stdout", "F", b"%03d " % i)
    return head[:-1] + fill * (100 - len(head)) + b"\n"


def test_the_size_cap_is_reached_exactly_and_never_passed(tmp_path: Path) -> None:
    records = [hundred(i) for i in range(10)]
    assert capped(tmp_path / "a", 300, b"".join(records)) == [b"".join(records[i:i + 3]) for i in (0, 3, 6, 9)]
    assert capped(tmp_path / "b", 299, *records) == [b"".join(records[i:i + 2]) for i in range(0, 10, 2)]


def test_the_size_cap_keeps_records_whole_whatever_they_hold(tmp_path: Path) -> None:
    """A "\\r" or NUL inside a record is content: the file is started afresh only between records."""
    records = [hundred(i, fill) for i, fill in enumerate([b"\r", b"\x00", b"\r\x00", b"\x0b", b"\x1c"] * 4)]
    assert capped(tmp_path / "a", 250, b"".join(records)) == [b"".join(records[i:i + 2]) for i in range(0, 20, 2)]


def test_a_record_longer_than_the_cap_has_a_file_of_its_own(tmp_path: Path) -> None:
    long = rec(T1, "stdout", "F", b"L" * 16000)
    assert capped(tmp_path, 8192, hundred(0) + long + hundred(1)) == [hundred(0), long, hundred(1)]


def test_a_log_that_cannot_be_started_afresh_is_written_on(tmp_path: Path) -> None:
    records = b"".join(hundred(i) for i in range(1000))
    assert capped(tmp_path, 8192, records, records, fail_restart=True) == [records * 2]


def test_a_log_past_the_cap_is_started_afresh_only_when_a_record_comes(tmp_path: Path) -> None:
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        pipe = _Pipe(container_id="c", fifo=-1, ack=-1, joiner=Joiner(16384), path=str(tmp_path / "app.log"),
                     directory=directory, name="app.log", file=logfile.open_fresh(directory, "app.log", "app.log"))
        os.write(pipe.file, b"x" * 999 + b"\n")  # written before the cap was lowered
        pipe.size = 1000
        before = (tmp_path / "app.log").stat().st_ino
        copier = LogCopier(16384, size_max=300)
        copier._write(pipe, [])
        assert (tmp_path / "app.log").stat().st_ino == before
        copier._write(pipe, [hundred(0)])
        assert (tmp_path / "app.log").read_bytes() == hundred(0)
        os.close(pipe.file)
    finally:
        os.close(directory)
