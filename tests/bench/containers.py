"""Container layer latency, with real runc and conmon on a busybox rootfs.

Run as root in a private namespace:
    scripts/in-private-ns .venv/bin/python -m tests.bench.containers [iterations]

Prints the median and p90 of: CreateContainer work (spec + bundle + conmon + runc create),
the conmon/runc create alone, start, ExecSync of `true` through runc exec (what cri-shim
uses), the same through conmon's exec mode (the alternative CRI-O uses), stop (SIGTERM
honoured) and remove.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cri_shim.api import api_pb2 as api
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.runtime import execsync, plan
from tests.support.containers import Harness


async def timed(samples: dict[str, list[float]], name: str, step: Callable[[], Awaitable[Any]]) -> Any:
    t = time.perf_counter()
    result = await step()
    samples.setdefault(name, []).append((time.perf_counter() - t) * 1000)
    return result


async def conmon_exec(h: Harness, container_id: str, bundle: Path) -> int:
    """ExecSync the way CRI-O does it: one conmon in exec mode per command."""
    process_file, _ = execsync.write_process(bundle, ["true"])
    sync_parent, sync_child = socket.socketpair()
    start_parent, start_child = socket.socketpair()
    log = bundle / f"exec-{os.urandom(4).hex()}.log"
    args = [h.monitor.binary, "--api-version", "1", "-c", container_id, "-n", "exec", "-r", h.runc.binary,
            "-p", str(bundle / "exec.pid"), "-e", "--exec-process-spec", str(process_file), "-l", f"k8s-file:{log}",
            "--socket-dir-path", str(h.monitor.socket_dir), "-u", os.urandom(8).hex(), "--sync",
            *[x for a in h.runc.global_args() for x in ("--runtime-arg", a)]]
    env = {"PATH": os.environ["PATH"], "_OCI_SYNCPIPE": str(sync_child.fileno()), "_OCI_STARTPIPE": str(start_child.fileno())}
    proc = await asyncio.create_subprocess_exec(*args, env=env, pass_fds=(sync_child.fileno(), start_child.fileno()),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    sync_child.close()
    start_child.close()
    start_parent.sendall(b"0")
    start_parent.close()
    loop = asyncio.get_running_loop()
    sync_parent.setblocking(False)
    data = b""
    while data.count(b"\n") < 2:
        chunk = await loop.sock_recv(sync_parent, 4096)
        if not chunk:
            break
        data += chunk
    sync_parent.close()
    await proc.wait()
    process_file.unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    return int(json.loads(data.splitlines()[-1])["data"])


async def run(h: Harness, n: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    rt = h.runtime
    original_create = h.monitor.create

    async def create_monitored(spec: Any, timeout: float) -> Any:
        return await timed(samples, "conmon + runc create", lambda: original_create(spec, timeout))

    h.monitor.create = create_monitored  # type: ignore[method-assign]
    for i in range(n):
        cfg = h.config("sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done")
        cid = os.urandom(32).hex()
        pod = _pod(h)
        kwargs = dict(container_id=cid, name=f"bench-{i}", sandbox=h.sandbox(), sandbox_config=pod, config=cfg,
                      image=ImageConfig(), rootfs=h.rootfs, log_path=plan.log_file(cfg, pod.log_directory))
        rec = await timed(samples, "create (spec+bundle+conmon+runc)", lambda: rt.create(**kwargs))
        await timed(samples, "start", lambda: rt.start(rec))
        result = await timed(samples, "ExecSync true (runc exec)", lambda: rt.exec_sync(h.get(rec.id), ["true"], 10))
        assert result.exit_code == 0
        code = await timed(samples, "ExecSync true (conmon exec mode)", lambda: conmon_exec(h, rec.id, Path(rec.bundle)))
        assert code == 0
        await timed(samples, "stop (SIGTERM honoured)", lambda: rt.stop(rec, 10))
        await timed(samples, "remove", lambda: rt.remove(rec))
    return samples


def _pod(h: Harness) -> api.PodSandboxConfig:
    return api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="pod", namespace="ns", uid="u"), log_directory=str(h.logs))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    h = Harness()
    try:
        samples = h.run(run(h, n), timeout=600)
    finally:
        h.close()
    print(f"{'step':36} {'median ms':>10} {'p90 ms':>8}   (n={n})")
    for name, values in samples.items():
        values.sort()
        p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
        print(f"{name:36} {statistics.median(values):10.1f} {p90:8.1f}")


if __name__ == "__main__":
    main()
