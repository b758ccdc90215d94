"""Making a pod's user namespace (cri_shim.idmappings holds its checked mappings).

The namespace is made by a child process (a multithreaded process can neither unshare nor
setns a user namespace): util-linux `unshare` makes the user, network, IPC and UTS namespaces
together, so that the user namespace owns the others, and runs `cat`, which echoes one byte to
say it is in them. The daemon writes the mappings into /proc/<pid>/uid_map and gid_map, pins the
four namespaces and closes the pipe: cat exits, and a daemon killed at any point leaves no
process behind (the pipe closes with it).
"""

from __future__ import annotations

import asyncio
import os

from cri_shim.errors import Internal
from cri_shim.idmappings import IdMappings, Mapping
from cri_shim.linux import syscalls

_UNSHARE_FLAGS = {"user": "--user", "net": "--net", "ipc": "--ipc", "uts": "--uts"}


def _map_text(mappings: tuple[Mapping, ...]) -> bytes:
    return "".join(f"{m.container_id} {m.host_id} {m.length}\n" for m in mappings).encode()


async def make(pins: dict[str, str], ids: IdMappings) -> None:
    """Makes the user namespace and, owned by it, the other namespaces pins names, and pins them
    all (pins must name "user"). The pins' files are made here; the record names them first."""
    child = await asyncio.create_subprocess_exec(
        "unshare", *(_UNSHARE_FLAGS[kind] for kind in pins), "--", "cat",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(b".")
        await child.stdin.drain()
        if await child.stdout.read(1) != b".":
            raise Internal(f"unshare did not make the pod's user namespace: {(await child.stderr.read()).decode(errors='replace')}")
        await asyncio.to_thread(_pin, child.pid, pins, ids)
    finally:
        child.stdin.close()
        if child.returncode is None:
            try:
                child.kill()
            except ProcessLookupError:
                pass
        await child.wait()


def _pin(pid: int, pins: dict[str, str], ids: IdMappings) -> None:
    for name, mappings in (("uid_map", ids.uids), ("gid_map", ids.gids)):
        with open(f"/proc/{pid}/{name}", "wb") as f:
            f.write(_map_text(mappings))
    for kind, path in pins.items():
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o444))
        syscalls.mount(f"/proc/{pid}/ns/{kind}", path, None, syscalls.MS_BIND)
