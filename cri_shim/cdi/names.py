"""Fully-qualified CDI device names, vendor.com/class=name, and where a container asks for them.

The grammar is the CDI reference parser's: vendor and class begin with a letter and end with a
letter or digit, with letters, digits, '_', '-' and '.' between; a device name begins and ends
with a letter or digit and may hold ':' too. kubelet sends the names in
ContainerConfig.cdi_devices (DevicePluginCDIDevices, GA); device plugins of before that put
comma-separated names in annotations under cdi.k8s.io/, which kubelet copies to the container
config. Both are read, in that order, each name once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument

ANNOTATION_PREFIX = "cdi.k8s.io/"
# More devices than any node has GPUs, FPGAs or NICs with their partitions; a bound on the work.
MAX_REQUESTED = 256
# A kind's vendor is a DNS subdomain (253) and its class a label (63); names get the same room.
MAX_NAME_BYTES = 253 + 1 + 63 + 1 + 253

_KIND_PART = r"[A-Za-z](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?"
_DEVICE = r"[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?"
KIND_RE = re.compile(rf"({_KIND_PART})/({_KIND_PART})", re.ASCII)
DEVICE_RE = re.compile(_DEVICE, re.ASCII)


@dataclass(frozen=True, order=True)
class QualifiedName:
    """One device as a container names it."""

    kind: str  # vendor.com/class
    name: str

    def __str__(self) -> str:
        return f"{self.kind}={self.name}"


def parse(text: str) -> QualifiedName:
    """The name, or InvalidArgument saying what is wrong with it."""
    if len(text.encode()) > MAX_NAME_BYTES:
        raise InvalidArgument(f"CDI device name {text!r} is longer than {MAX_NAME_BYTES} bytes")
    kind, sep, name = text.partition("=")
    if not sep or not KIND_RE.fullmatch(kind) or not DEVICE_RE.fullmatch(name):
        raise InvalidArgument(f"CDI device name {text!r} is not of the form vendor.com/class=name")
    return QualifiedName(kind, name)


def requested(config: api_pb2.ContainerConfig) -> list[QualifiedName]:
    """The devices the container asks for: CDI_devices, then the cdi.k8s.io/* annotations (by key)."""
    texts = [d.name for d in config.CDI_devices]
    for key in sorted(k for k in config.annotations if k.startswith(ANNOTATION_PREFIX)):
        texts += [t.strip() for t in config.annotations[key].split(",")]
    out: list[QualifiedName] = []
    for text in texts:
        name = parse(text)
        if name not in out:
            out.append(name)
            if len(out) > MAX_REQUESTED:
                raise InvalidArgument(f"a container may ask for at most {MAX_REQUESTED} CDI devices")
    return out
