"""What writing container logs costs, with real runc and conmon on a busybox rootfs.

Run as root in a private namespace:
    scripts/in-private-ns .venv/bin/python -m tests.bench.logs [containers] [lines]

Prints, for the log writing as it is configured:
- the records and bytes a 16,383-byte line written one printf at a time becomes;
- the throughput of a container writing `lines` lines of 100 bytes as fast as it can (from
  StartContainer to its exit recorded with its log complete), and the CPU time this process
  (the daemon's side of the log writing) spent meanwhile;
- the memory `containers` idle logging containers cost: this process's RSS growth, and the
  monitors' RSS and PSS (every process of the container's monitor, conmon and what it runs).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

from tests.support import crilog
from tests.support.containers import Harness


def rss_kib(pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:  # gone meanwhile
        pass
    return 0


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def monitors(h: Harness) -> list[int]:
    """The processes a container costs besides its own: its conmon and what conmon runs (not the
    container), and the process holding its log FIFO when there is one (stdout on the FIFO)."""
    pids = {r.monitor_pid for r in h.runtime.store if r.monitor_pid and not r.finished_at}
    containers = {r.pid for r in h.runtime.store}
    found = set(pids)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            stdout = os.readlink(entry / "fd" / "1")
        except (OSError, IndexError, ValueError):
            continue
        if ppid in pids and int(entry.name) not in containers:
            found.add(int(entry.name))
        elif stdout.startswith(str(h.dir)) and stdout.endswith("/log.fifo"):
            found.add(int(entry.name))
    return sorted(found)


def partial_line(h: Harness) -> None:
    script = "i=0; while [ $i -lt 16383 ]; do printf x; i=$((i+1)); done; echo; echo -n a; echo b"
    rec = h.run_to_exit(h.config("sh", "-c", script))
    path = h.log_path(rec)
    entries = crilog.parse(path)
    lines = crilog.messages(entries)
    assert lines == ["x" * 16383, "ab"], [len(x) for x in lines]
    print(f"16,383-byte line one printf at a time, then `echo -n a; echo b`: {len(entries)} records "
          f"({sum(e.partial for e in entries)} P), {path.stat().st_size} bytes of file")
    h.run(h.runtime.remove(rec))


def throughput(h: Harness, lines: int) -> None:
    line = "0123456789" * 10
    rec = h.create(h.config("sh", "-c", f"yes {line[:-1]} | head -n {lines}"))
    cpu0, t0 = time.process_time(), time.perf_counter()
    rec = h.wait_exit(h.start(rec), timeout=600)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    size = h.log_path(rec).stat().st_size
    written = sum(1 for _ in open(h.log_path(rec), "rb"))
    assert written >= lines, written
    mb = lines * len(line) / 1e6
    print(f"{lines} lines of {len(line)} bytes: {elapsed:.2f} s, {mb / elapsed:.1f} MB/s of output, "
          f"{lines / elapsed / 1000:.0f}k lines/s; log {size / 1e6:.1f} MB; this process's CPU {cpu:.2f} s")
    h.run(h.runtime.remove(rec))


def memory(h: Harness, n: int) -> None:
    h.start(h.create(h.config("true")))  # the first container's one-off costs (the copier's thread)
    time.sleep(1)
    base = rss_kib()
    records = [h.start(h.create(h.config("sh", "-c", "while :; do echo tick; sleep 1; done"))) for _ in range(n)]
    time.sleep(3)
    grown = rss_kib() - base
    procs = monitors(h)
    rss = sum(rss_kib(p) for p in procs)
    pss = sum(pss_kib(p) for p in procs)
    print(f"{n} logging containers: this process grew {grown / 1024:.1f} MB ({grown / n:.0f} KiB each); "
          f"{len(procs)} monitor processes, RSS {rss / 1024:.1f} MB, PSS {pss / 1024:.1f} MB "
          f"({(grown + pss) / n / 1024:.2f} MB per container, growth + PSS); maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for rec in records:
        h.run(h.runtime.remove(rec))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    h = Harness()
    try:
        memory(h, n)  # first: what later steps allocate would hide this process's growth
        partial_line(h)
        throughput(h, lines)
    finally:
        h.close()
    os.sync()


if __name__ == "__main__":
    main()
