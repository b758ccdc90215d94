"""A flood of half-open HTTP request heads, as any local user can send to the streaming port:
`width` connections kept open at once, each sending the start of a head and then nothing,
reopened as soon as the server closes one.

The flooder runs as its own process under an unprivileged uid (nobody), from this file's
source: the part below Flood uses the standard library only, so the process needs nothing
of the project or its virtualenv.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

NOBODY = 65534
# The start of a request head that never ends.
HALF_HEAD = b"POST /exec/"


class Flood:
    """Controls a flooder process: start() returns once `width` connections were opened,
    stop() stops reopening and returns the counts once the server closed every connection."""

    def __init__(self, port: int, width: int) -> None:
        self.port = port
        self.width = width
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        source = Path(__file__).read_text()
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-I", "-c", source, str(self.port), str(self.width)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, user=NOBODY, group=NOBODY,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "flooding\n", f"flooder said {line!r}"

    def stop(self, timeout: float = 120) -> dict[str, int]:
        """Counts: opened, and reopened after the server closed them; raises if connections
        stay open past timeout (the server never closed them)."""
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate("stop\n", timeout=timeout)
        finally:
            self.kill()
        return json.loads(out)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _flood(port: int, width: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_input() -> None:
        loop.remove_reader(sys.stdin.fileno())
        stop.set()

    loop.add_reader(sys.stdin.fileno(), on_input)
    counts = {"opened": 0, "closed_by_server": 0, "connect_failures": 0}
    first_wave = asyncio.Event()

    async def hold() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["connect_failures"] += 1
            await asyncio.sleep(0.05)
            return
        counts["opened"] += 1
        if counts["opened"] >= width:
            first_wave.set()
        try:
            writer.write(HALF_HEAD)
            await writer.drain()
            await reader.read()  # b"" (or a reset) when the server closes it
        except OSError:
            pass
        counts["closed_by_server"] += 1
        writer.close()

    async def lane() -> None:
        while not stop.is_set():
            await hold()

    lanes = [asyncio.create_task(lane()) for _ in range(width)]
    await asyncio.wait_for(first_wave.wait(), 60)
    print("flooding", flush=True)
    await asyncio.gather(*lanes)
    return counts


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_flood(int(sys.argv[1]), int(sys.argv[2])))), flush=True)
