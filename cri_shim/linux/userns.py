"""A process holding new namespaces owned by a new, mapped user namespace, for as long as needed.

A multithreaded process can neither unshare nor setns a user namespace, so a child does it:
util-linux `unshare` makes the user namespace (and any others asked for, owned by it) and runs
`cat`, which echoes one byte to say it is in them. The daemon writes the mappings into
/proc/<pid>/uid_map and gid_map and uses the namespaces through /proc/<pid>/ns/<kind>; when the
block ends it closes the pipe and kills the child, and a daemon killed at any point leaves no
process behind (the pipe closes with it, and cat exits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cri_shim.errors import Internal
from cri_shim.idmappings import IdMappings, Mapping
from cri_shim.linux import proc

_UNSHARE_OPTIONS = {"user": "--user", "net": "--net", "ipc": "--ipc", "uts": "--uts"}


def _map_text(mappings: tuple[Mapping, ...]) -> bytes:
    return "".join(f"{m.container_id} {m.host_id} {m.length}\n" for m in mappings).encode()


def _write_maps(pid: int, ids: IdMappings) -> None:
    for name, mappings in (("uid_map", ids.uids), ("gid_map", ids.gids)):
        proc.write_id_map(pid, name, _map_text(mappings))


@asynccontextmanager
async def holder(kinds: list[str], ids: IdMappings) -> AsyncIterator[int]:
    """The pid of a child in a new user namespace mapped by ids and in new namespaces of the other
    kinds ("net", "ipc", "uts"), owned by it; the child is gone when the block ends."""
    options = [_UNSHARE_OPTIONS[kind] for kind in ("user", *(k for k in kinds if k != "user"))]
    child = await asyncio.create_subprocess_exec(
        "unshare", *options, "--", "cat",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        child.stdin.write(b".")
        await child.stdin.drain()
        if await child.stdout.read(1) != b".":
            raise Internal(f"unshare did not make a user namespace: {(await child.stderr.read()).decode(errors='replace')}")
        await asyncio.to_thread(_write_maps, child.pid, ids)
        yield child.pid
    finally:
        child.stdin.close()
        if child.returncode is None:
            try:
                child.kill()
            except ProcessLookupError:
                pass
        await child.wait()
