"""The OCI spec a bundle runs with, as verbose status reports it (`crictl inspect`'s
info.runtimeSpec, containerd's field): the bundle's config.json as written, which is what runc
was given at create.

Verbose info has to fit in one reply beside the status's labels, annotations and mounts. A
spec's labels and annotations are bounded (cri_shim.metadata), but its args and env are bounded
only by the gRPC message that carried CreateContainer, so a spec may be as large as a message.
One that takes more than SPEC_SHARE of server.max_message_bytes is left out, and
runtimeSpecOmitted says why, so that the status itself is never lost to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SPEC_SHARE = 0.25


def spec_limit(max_message_bytes: int) -> int:
    """The most bytes of JSON a runtimeSpec may take in a reply of at most max_message_bytes."""
    return int(max_message_bytes * SPEC_SHARE)


def verbose_entries(bundle: Path, limit: int) -> dict[str, Any]:
    """{"runtimeSpec": the bundle's spec}, or {"runtimeSpecOmitted": why} when it is over limit
    bytes or cannot be read (a bundle being removed)."""
    path = bundle / "config.json"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                return {"runtimeSpecOmitted": f"{path} is {size} bytes, over the {limit}-byte limit of verbose info"}
            spec = json.loads(f.read(limit + 1))
    except (OSError, ValueError) as exc:
        return {"runtimeSpecOmitted": f"{path} cannot be read: {exc}"}
    encoded = len(json.dumps(spec))
    if encoded > limit:
        return {"runtimeSpecOmitted": f"{path} takes {encoded} bytes as JSON, over the {limit}-byte limit of verbose info"}
    return {"runtimeSpec": spec}
