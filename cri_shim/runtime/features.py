"""What each OCI runtime handler can do, asked of the runtime itself at start-up.

Recursive read-only mounts need both the runtime's "rro" mount option (`runc features`
lists its mount options since runc 1.1) and mount_setattr(2), which Linux has from 5.12;
containerd checks the same two. A runtime without `features` (or that fails it) offers none.
"""

from __future__ import annotations

import json
import logging
import platform
import re
from dataclasses import dataclass

from cri_shim.errors import Internal
from cri_shim.runtime.runc import Runc

log = logging.getLogger("cri_shim.runtime")

# The first kernel with mount_setattr(2).
MOUNT_SETATTR_KERNEL = (5, 12)


@dataclass(frozen=True)
class HandlerFeatures:
    recursive_read_only_mounts: bool = False


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as 6.1.0-18-amd64."""
    match = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return (int(match[1]), int(match[2])) if match else (0, 0)


def from_features(text: bytes, kernel: tuple[int, int]) -> HandlerFeatures:
    """The features a `runtime features` answer and the kernel allow."""
    try:
        options = set(json.loads(text).get("mountOptions") or [])
    except (ValueError, AttributeError):
        options = set()
    return HandlerFeatures(recursive_read_only_mounts="rro" in options and kernel >= MOUNT_SETATTR_KERNEL)


async def detect(runtime: Runc) -> HandlerFeatures:
    """The handler's features, none when it cannot say."""
    try:
        text = await runtime.run("features")
    except (Internal, OSError) as exc:  # OSError: a configured handler that is not installed
        log.info("runtime cannot list its features", extra={"runtime": runtime.binary, "error": str(exc)})
        return HandlerFeatures()
    return from_features(text, kernel_version())
