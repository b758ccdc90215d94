"""Container log lines as kubelet's reader expects them, however the container wrote them: with
real conmon, whose records the daemon joins (cri_shim.runtime.logjoin, logcopy)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.support import crilog
from tests.support.containers import Harness, module_harness

pytestmark = pytest.mark.integration
_ = module_harness  # the module-wide `h` fixture

MAX = 16384  # runtime.max_container_log_line_size's default


def entries(h: Harness, script: str, tty: bool = False) -> list[crilog.Entry]:
    cfg = h.config("sh", "-c", script)
    cfg.tty = tty
    rec = h.run_to_exit(cfg)
    found = crilog.parse(h.log_path(rec))
    h.run(h.runtime.remove(rec))
    return found


def shape(found: list[crilog.Entry]) -> list[tuple[str, str, int]]:
    return [(e.stream, "P" if e.partial else "F", len(e.content)) for e in found]


def test_a_line_written_a_byte_at_a_time_is_one_full_record(h: Harness) -> None:
    found = entries(h, "i=0; while [ $i -lt 16383 ]; do printf x; i=$((i+1)); done; echo; echo -n a; echo b")
    assert shape(found) == [("stdout", "F", 16383), ("stdout", "F", 2)]
    assert found[0].content == "x" * 16383 and found[1].content == "ab"


def test_a_line_longer_than_the_maximum_is_split_at_the_maximum(h: Harness) -> None:
    found = entries(h, "head -c 40000 /dev/zero | tr '\\0' y; echo; echo after")
    assert shape(found) == [("stdout", "P", MAX), ("stdout", "P", MAX), ("stdout", "F", 40000 - 2 * MAX), ("stdout", "F", 5)]
    assert "".join(e.content for e in found[:3]) == "y" * 40000
    # Timestamps are RFC 3339 with nanoseconds and never go back.
    stamps = [(e.timestamp, e.nanos) for e in found]
    assert stamps == sorted(stamps)


def test_stdout_and_stderr_keep_their_own_partial_lines(h: Harness) -> None:
    script = "printf a; printf b >&2; sleep 0.1; printf c; printf d >&2; sleep 0.1; echo e >&2; echo f"
    found = entries(h, script)
    assert sorted((e.stream, e.partial, e.content) for e in found) == [("stderr", False, "bde"), ("stdout", False, "acf")]


def test_unterminated_output_at_exit_is_written_as_partial_records(h: Harness) -> None:
    found = entries(h, "echo whole; printf 'no newline'; printf 'on stderr' >&2")
    assert sorted((e.stream, e.partial, e.content) for e in found) == [
        ("stderr", True, "on stderr"), ("stdout", False, "whole"), ("stdout", True, "no newline")]


def test_a_terminal_is_joined_too_without_its_carriage_returns(h: Harness) -> None:
    found = entries(h, "printf 'x'; sleep 0.1; printf 'y\\n'; echo z", tty=True)
    assert [(e.stream, e.partial, e.content) for e in found] == [("stdout", False, "xy"), ("stdout", False, "z")]


def test_reopen_keeps_a_partial_line_whole_in_the_new_file(h: Harness) -> None:
    rec = h.start(h.create(h.config("sh", "-c", "printf first; sleep 1.5; echo ' half'; echo done; sleep 100000")))
    log = h.log_path(rec)
    time.sleep(0.5)
    assert log.read_text() == ""
    os.rename(log, log.with_name(log.name + ".1"))
    h.run(h.runtime.reopen_log(h.get(rec.id)))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(crilog.written(log)) < 2:
        time.sleep(0.05)
    assert [(e.partial, e.content) for e in crilog.parse(log)] == [(False, "first half"), (False, "done")]
    assert log.with_name(log.name + ".1").read_text() == ""
    h.run(h.runtime.remove(rec))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_huge_line_without_newline_never_grows_the_daemon(h: Harness) -> None:
    """The attacker's case: 256 MiB on stdout and stderr at once, no newline. The daemon holds at
    most the maximum line size per stream; the line reaches the log as partial records of that size."""
    mib = 128
    script = f"head -c {mib}m /dev/zero | tr '\\0' a & head -c {mib}m /dev/zero | tr '\\0' b >&2; wait"
    rec = h.start(h.create(h.config("sh", "-c", script)))
    base, peak = rss_kib(), 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        rec = h.wait_exit(rec, timeout=600)
    finally:
        done.set()
        sampler.join()
    assert peak - base < 16 * 1024, f"the daemon grew by {(peak - base) // 1024} MiB"
    sizes: dict[str, set[int]] = {"stdout": set(), "stderr": set()}
    total = {"stdout": 0, "stderr": 0}
    with open(h.log_path(rec), "rb") as f:
        for line in f:
            stamp, stream, tag, content = line.rstrip(b"\n").split(b" ", 3)
            assert tag == b"P"
            sizes[stream.decode()].add(len(content))
            total[stream.decode()] += len(content)
    assert total == {"stdout": mib << 20, "stderr": mib << 20}
    assert sizes == {"stdout": {MAX}, "stderr": {MAX}}  # 128 MiB is a multiple of 16 KiB
    h.run(h.runtime.remove(rec))


def joined_lines(path: Path) -> dict[str, list[bytes]]:
    """Each stream's lines in a log file, P records joined with the record that ends them (bytes:
    lines may hold "\\r" and NUL)."""
    lines: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    pending: dict[str, bytes] = {}
    with open(path, "rb") as f:
        for record in f:
            stamp, stream, tag, content = record.rstrip(b"\n").split(b" ", 3)
            crilog.parse_timestamp(stamp.decode())
            text = pending.pop(stream.decode(), b"") + content
            if tag == b"P":
                assert len(content) == MAX, "only a line longer than the maximum is split"
                pending[stream.decode()] = text
            else:
                assert tag == b"F"
                lines[stream.decode()].append(text)
    assert not pending
    return lines


BURST = ("yes err | head -n 50000 >&2 & "
         "yes 'plain 0123456789' | head -n 50000; yes 'with P in it' | head -n 50000; "
         "yes \"$(printf 'crlf\\r')\" | head -n 20000; yes abc | head -n 10000 | tr b '\\0'; "
         "head -c 100000 /dev/zero | tr '\\0' y; echo; wait")


def test_a_burst_of_lines_of_every_shape_arrives_line_for_line(h: Harness) -> None:
    """As fast as the container writes: lines holding " P " (the tag's look), a "\\r" before the
    newline (dropped), NUL, a line longer than conmon's reads and than the maximum, stderr at once."""
    rec = h.run_to_exit(h.config("sh", "-c", BURST))
    lines = joined_lines(h.log_path(rec))
    assert lines["stderr"] == [b"err"] * 50000
    assert lines["stdout"] == ([b"plain 0123456789"] * 50000 + [b"with P in it"] * 50000 + [b"crlf"] * 20000
                               + [b"a\0c"] * 10000 + [b"y" * 100000])
    h.run(h.runtime.remove(rec))


def test_a_burst_under_the_size_cap_keeps_whole_records(h: Harness) -> None:
    """runtime.log_size_max_bytes: the log is started afresh between records, never past the cap."""
    cap = 65536
    h.monitor.logs.size_max = cap
    try:
        rec = h.run_to_exit(h.config("sh", "-c", "yes 'line with P in it' | head -n 200000; echo last"))
    finally:
        h.monitor.logs.size_max = -1
    path = h.log_path(rec)
    assert 0 < path.stat().st_size <= cap
    lines = joined_lines(path)
    assert lines["stdout"][-1] == b"last" and set(lines["stdout"][:-1]) == {b"line with P in it"}
    h.run(h.runtime.remove(rec))
