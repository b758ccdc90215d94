"""One CDI spec file: read within bounds, parsed (JSON, or YAML with PyYAML's safe loader), checked.

A file is refused whole (SpecError, and the registry skips it with a log line, as the CDI
reference registry does) when it is not a regular file, is too large, does not parse, names an
unknown cdiVersion, uses a field its declared version does not have (the reference library's
minimum-version rule), holds an unknown field, or has no devices. MAX_BYTES and MAX_YAML_BYTES
bound what is read, MAX_VALUES what is walked (YAML aliases make a small file stand for a
large tree). Versions 0.3.0 to 1.1.0 are read: 0.5.0 to 0.8.0 are what drivers write today,
1.0.0 changed only the reference library's Go API, and 1.1.0 adds netDevices (refused when a
device using them is asked for) and Intel RDT fields runc 1.1 lacks.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from typing import Any

import yaml

from cri_shim.cdi import edits, names
from cri_shim.cdi.edits import Budget, Edits, SpecError

# Large driver specs (eight GPUs with their partitions and libraries) are a few hundred KiB.
# Read and checked here (2 cores, shared): YAML about 0.6 MB/s (PyYAML's C parser, its Python
# objects), JSON about 4.5 MB/s; a YAML file gets less room, so a first read stays near 1-2 s.
MAX_BYTES = 4 * 1024 * 1024
MAX_YAML_BYTES = 1024 * 1024
MAX_VALUES = 200_000
MAX_DEVICES = 4096
VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
EXTENSIONS = (".json", ".yaml")

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Spec:
    """The devices of one spec file and the edits every one of them brings."""

    path: str
    priority: int  # index of its directory: later directories override earlier ones
    kind: str
    version: str
    edits: Edits
    devices: dict[str, Edits]


def read(dir_fd: int, name: str) -> bytes:
    """The file's bytes; opened beneath the directory without following a symlink, and without
    blocking on a FIFO put in its place."""
    limit = MAX_BYTES if name.endswith(".json") else MAX_YAML_BYTES
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise SpecError(f"cannot open: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpecError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SpecError(f"larger than {limit} bytes")
    return data


def _version_needed(spec: dict[str, Any], kind_class: str, devices: list[tuple[str, Edits, Any]], top: Edits) -> str:
    """The oldest version that has every field the file uses (the reference library's rule)."""
    all_edits = [top] + [e for _, e, _ in devices]
    rdt = [e.intel_rdt for e in all_edits if e.intel_rdt is not None]
    if any(e.net_devices for e in all_edits) or any(r.schemata is not None or r.enable_monitoring for r in rdt):
        return "1.1.0"
    if rdt or any(e.additional_gids for e in all_edits):
        return "0.7.0"
    if spec.get("annotations") or any(a for _, _, a in devices) or "." in kind_class:
        return "0.6.0"
    if any(n[:1].isdigit() for n, _, _ in devices) or any(d.host_path != d.path for e in all_edits for d in e.device_nodes):
        return "0.5.0"
    if any(m.type for e in all_edits for m in e.mounts):
        return "0.4.0"
    return "0.3.0"


def _annotations(raw: Any, where: str, budget: Budget) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a mapping")
    budget.take(len(raw))
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SpecError(f"{where} must map strings to strings")
    return raw


def parse(path: str, priority: int, data: bytes) -> Spec:
    """The spec a file holds, or SpecError."""
    try:
        raw = json.loads(data) if path.endswith(".json") else yaml.load(data, Loader=_Loader)  # noqa: S506 - a safe loader
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        raise SpecError(f"does not parse: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    budget = Budget(MAX_VALUES)
    top = edits.fields(raw, "spec", ("cdiVersion", "kind", "annotations", "devices", "containerEdits"), budget)
    version = edits.text(top.get("cdiVersion"), "cdiVersion", required=True).removeprefix("v")
    if version not in VERSIONS:
        raise SpecError(f"cdiVersion {version!r} is not one of {', '.join(VERSIONS)}")
    kind = edits.text(top.get("kind"), "kind", required=True)
    if not names.KIND_RE.fullmatch(kind):
        raise SpecError(f"kind {kind!r} is not of the form vendor.com/class")
    raw_devices = top.get("devices")
    if not isinstance(raw_devices, list) or not raw_devices:
        raise SpecError("devices must be a non-empty list")
    if len(raw_devices) > MAX_DEVICES:
        raise SpecError(f"more than {MAX_DEVICES} devices")
    budget.take(len(raw_devices))
    spec_edits = edits.parse(top.get("containerEdits"), "containerEdits", budget)
    _annotations(top.get("annotations"), "annotations", budget)
    devices: list[tuple[str, Edits, Any]] = []
    for i, raw_device in enumerate(raw_devices):
        where = f"devices[{i}]"
        d = edits.fields(raw_device, where, ("name", "annotations", "containerEdits"), budget)
        name = edits.text(d.get("name"), f"{where}.name", required=True)
        if not names.DEVICE_RE.fullmatch(name):
            raise SpecError(f"{where}.name {name!r} is not a valid device name")
        device_edits = edits.parse(d.get("containerEdits"), f"{where}.containerEdits", budget)
        if device_edits.empty():
            raise SpecError(f"device {name!r} has no containerEdits")
        devices.append((name, device_edits, _annotations(d.get("annotations"), f"{where}.annotations", budget)))
    seen = [n for n, _, _ in devices]
    if len(set(seen)) != len(seen):
        raise SpecError("a device name is defined twice")
    needed = _version_needed(top, kind.partition("/")[2], devices, spec_edits)
    if VERSIONS.index(needed) > VERSIONS.index(version):
        raise SpecError(f"uses fields of cdiVersion {needed}, but declares {version}")
    return Spec(path=path, priority=priority, kind=kind, version=version, edits=spec_edits,
                devices={n: e for n, e, _ in devices})
