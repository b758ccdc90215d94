"""The CDI devices of the configured spec directories, and a container's request resolved on this host.

Directories are read in the order configured: a device defined in a later one overrides the
same device in an earlier one (/var/run/cdi, where drivers write specs at run time, over
/etc/cdi), while two files of one directory defining it make it ambiguous (InvalidArgument when
asked for), as in the CDI reference registry. Each resolve rescans the directories, so a spec a
driver wrote a moment before CreateContainer is seen; a file is parsed again only when its
inode, size or mtime changed, and a file refused is logged once per version of it.

A request is refused before anything is made: a malformed name or an ambiguous device is
InvalidArgument, a device no file defines NOT_FOUND (containerd and CRI-O answer UNKNOWN with
"unresolvable CDI devices"; NOT_FOUND is what this runtime answers for anything named and
missing). A name `vendor.com/class=all` that no spec defines as a device stands for every
device of the kind, in name order (drivers such as NVIDIA's define "all" themselves).
Device nodes are completed from the host node: a node a spec does not fully describe (type and
major) must exist as a character or block device, and a host path that exists must be one.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass, replace

from cri_shim.cdi import specfile
from cri_shim.cdi.edits import DeviceNode, Edits, SpecError, merge
from cri_shim.cdi.names import QualifiedName
from cri_shim.cdi.specfile import Spec
from cri_shim.errors import InvalidArgument, NotFound

log = logging.getLogger("cri_shim.cdi")

# Files read from one directory; more are left out with a log line.
MAX_FILES = 1024
ALL = "all"


@dataclass(frozen=True)
class Device:
    spec: Spec
    name: str
    edits: Edits
    others: tuple[str, ...] = ()  # other files of the same priority defining it: ambiguous


_Key = tuple[int, int, int, int]


class Registry:
    """Spec files of the configured directories, parsed once per version of each."""

    def __init__(self, dirs: list[str]) -> None:
        self.dirs = list(dirs)
        self._lock = threading.Lock()
        self._files: dict[str, tuple[_Key, Spec | None]] = {}

    def devices(self) -> dict[QualifiedName, Device]:
        """Every device of the directories, by name, with the overrides and ambiguities applied."""
        with self._lock:
            seen: set[str] = set()
            specs = [s for p, d in enumerate(self.dirs) for s in self._scan(p, d, seen)]
            for gone in self._files.keys() - seen:  # drivers remove a claim's spec with the claim
                del self._files[gone]
        out: dict[QualifiedName, Device] = {}
        for spec in specs:
            for name, dev_edits in spec.devices.items():
                qn = QualifiedName(spec.kind, name)
                old = out.get(qn)
                if old is not None and old.spec.priority == spec.priority:
                    out[qn] = replace(old, others=old.others + (spec.path,))
                else:
                    out[qn] = Device(spec, name, dev_edits)
        return out

    def _scan(self, priority: int, directory: str, seen: set[str]) -> list[Spec]:
        """The valid specs of one directory; the paths looked at are added to seen."""
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("CDI spec directory unreadable", extra={"dir": directory, "error": exc.strerror})
            return []
        try:
            entries = sorted(n for n in os.listdir(dir_fd) if n.endswith(specfile.EXTENSIONS))
            if len(entries) > MAX_FILES:
                log.warning("CDI spec directory holds too many files, the rest left out",
                            extra={"dir": directory, "files": len(entries), "read": MAX_FILES})
            specs = []
            for name in entries[:MAX_FILES]:
                seen.add(os.path.join(directory, name))
                spec = self._load(dir_fd, directory, name, priority)
                if spec is not None:
                    specs.append(spec)
            return specs
        finally:
            os.close(dir_fd)

    def _load(self, dir_fd: int, directory: str, name: str, priority: int) -> Spec | None:
        path = os.path.join(directory, name)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._files.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            spec = specfile.parse(path, priority, specfile.read(dir_fd, name))
        except SpecError as exc:
            log.warning("CDI spec file skipped", extra={"path": path, "error": str(exc)})
            spec = None
        self._files[path] = (key, spec)
        return spec

    def resolve(self, requested: list[QualifiedName]) -> Edits:
        """The edits the requested devices bring, completed from the host's device nodes."""
        known = self.devices()
        chosen: list[Device] = []
        missing = []
        for qn in requested:
            if qn in known:
                chosen.append(known[qn])
            elif qn.name == ALL and (every := sorted((n for n in known if n.kind == qn.kind), key=lambda n: n.name)):
                chosen += [known[n] for n in every]
            else:
                missing.append(str(qn))
        if missing:
            raise NotFound(f"unresolvable CDI devices {', '.join(missing)}: no spec in {', '.join(self.dirs)} defines them")
        parts: list[Edits] = []
        seen: set[str] = set()  # devices and spec files whose edits are in parts
        for dev in chosen:
            if dev.others:
                raise InvalidArgument(f"CDI device {dev.spec.kind}={dev.name} is ambiguous: defined by "
                                      f"{', '.join((dev.spec.path,) + dev.others)}")
            if f"{dev.spec.kind}={dev.name}" in seen:
                continue
            if dev.spec.path not in seen:  # a spec's own edits come once, with its first device
                seen.add(dev.spec.path)
                parts.append(dev.spec.edits)
            seen.add(f"{dev.spec.kind}={dev.name}")
            parts.append(dev.edits)
        merged = merge(parts)
        _check_supported(merged)
        return replace(merged, device_nodes=tuple(complete(d) for d in merged.device_nodes))


def _check_supported(e: Edits) -> None:
    """What runc 1.1 cannot do is refused rather than dropped."""
    if e.net_devices:
        raise InvalidArgument("CDI netDevices (moving host network interfaces into the container) are not supported")
    if e.intel_rdt is not None and (e.intel_rdt.schemata is not None or e.intel_rdt.enable_monitoring):
        raise InvalidArgument("CDI intelRdt schemata and enableMonitoring are not supported by runc 1.1")


def complete(node: DeviceNode) -> DeviceNode:
    """The node with type, major, minor and mode read from its host node where the spec left them out."""
    kind = "c" if node.type == "u" else node.type
    if kind == "p":
        raise InvalidArgument(f"CDI device node {node.path}: a FIFO is not a device node")
    try:
        st = os.lstat(node.host_path)
    except FileNotFoundError:
        if kind and node.major is not None:
            return replace(node, type=kind, minor=node.minor or 0)  # fully described: the host need not have it
        raise NotFound(f"CDI host device {node.host_path} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(f"CDI host device {node.host_path}: {exc.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        host_kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        host_kind = "b"
    else:
        raise InvalidArgument(f"CDI host device {node.host_path} is not a character or block device node")
    if kind and kind != host_kind:
        raise InvalidArgument(f"CDI device node {node.path}: type {kind} but host node {node.host_path} is {host_kind}")
    described = node.major is not None
    return replace(
        node, type=host_kind,
        major=node.major if described else os.major(st.st_rdev),
        minor=(node.minor or 0) if described else os.minor(st.st_rdev),
        file_mode=node.file_mode if node.file_mode is not None else stat.S_IMODE(st.st_mode),
    )
