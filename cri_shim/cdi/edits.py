"""containerEdits: what a CDI spec, or one of its devices, changes in a container's OCI spec.

parse() reads the raw edits of a spec file as strictly as the CDI reference library does
(unknown fields, wrong types and invalid values make the whole file invalid) and more strictly
where the file reaches the host: every path is absolute and climbs no '..', hooks name an
absolute program, env entries are NAME=value, numbers are in range. merge() joins the edits of
the devices a container asks for (each spec's own edits once), refusing edits that contradict
each other (two nodes or two mounts at one container path, one variable set to two values, two
Intel RDT classes) with InvalidArgument: the reference library would let the last one win,
which makes the result depend on the order of the request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cri_shim.errors import InvalidArgument

MAX_ID = 2**32 - 2
MAX_PATH_BYTES = 4096
# The OCI hook points runc 1.1 runs (prestart is the deprecated name createRuntime replaced).
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
DEVICE_TYPES = ("b", "c", "u", "p")
NO_PERMISSIONS = "none"


class SpecError(ValueError):
    """A spec file's content is invalid: the file is skipped (the message says why)."""


class Budget:
    """Counts the values a spec file's edits hold, so that a small YAML file whose aliases
    expand to millions of entries is refused instead of walked."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise SpecError("too many values (YAML aliases expanding?)")


def fields(raw: Any, where: str, known: Iterable[str], budget: Budget) -> dict[str, Any]:
    """raw as a mapping of known string keys."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a mapping")
    budget.take(len(raw))
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    return raw


def text(raw: Any, where: str, *, required: bool = False) -> str:
    if raw is None and not required:
        return ""
    if not isinstance(raw, str) or (required and not raw):
        raise SpecError(f"{where} must be a{' non-empty' if required else ''} string")
    if "\x00" in raw:
        raise SpecError(f"{where} must not contain NUL")
    return raw


def strings(raw: Any, where: str, budget: Budget) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(f"{where} must be a list of strings")
    budget.take(len(raw))
    return tuple(text(v, f"{where}[{i}]", required=False) for i, v in enumerate(raw))


def number(raw: Any, where: str, low: int, high: int) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise SpecError(f"{where} must be an integer in {low}..{high}")
    return raw


def absolute_path(raw: Any, where: str) -> str:
    """An absolute path none of whose components is '..'."""
    path = text(raw, where, required=True)
    if not path.startswith("/"):
        raise SpecError(f"{where} {path!r} must be absolute")
    if ".." in path.split("/"):
        raise SpecError(f"{where} {path!r} must not climb with '..'")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise SpecError(f"{where} is longer than {MAX_PATH_BYTES} bytes")
    return path


def _env(raw: Any, where: str, budget: Budget) -> tuple[str, ...]:
    env = strings(raw, where, budget)
    for i, entry in enumerate(env):
        if entry.find("=") <= 0:
            raise SpecError(f"{where}[{i}] {entry!r} is not NAME=value")
    return env


@dataclass(frozen=True)
class DeviceNode:
    """A device node as the spec file gives it; what it leaves out is read from the host node."""

    path: str
    host_path: str
    type: str = ""
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    permissions: str = ""
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    type: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hook:
    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@dataclass(frozen=True)
class IntelRdt:
    """linux.intelRdt as runc 1.1 knows it; schemata and enableMonitoring (CDI 1.1) it does not."""

    clos_id: str = ""
    l3_cache_schema: str = ""
    mem_bw_schema: str = ""
    enable_cmt: bool = False
    enable_mbm: bool = False
    schemata: tuple[str, ...] | None = None
    enable_monitoring: bool = False


@dataclass(frozen=True)
class NetDevice:
    """A host network interface to move into the container (CDI 1.1; refused, runc 1.1 cannot)."""

    host_interface_name: str
    name: str


@dataclass(frozen=True)
class Edits:
    """The containerEdits of a spec or a device, or of a whole request once merged."""

    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()
    additional_gids: tuple[int, ...] = ()
    intel_rdt: IntelRdt | None = None
    net_devices: tuple[NetDevice, ...] = ()

    def empty(self) -> bool:
        return self == Edits()


def _device_node(raw: Any, where: str, budget: Budget) -> DeviceNode:
    f = fields(raw, where, ("path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid"), budget)
    path = absolute_path(f.get("path"), f"{where}.path")
    host_path = absolute_path(f["hostPath"], f"{where}.hostPath") if f.get("hostPath") else path
    kind = text(f.get("type"), f"{where}.type")
    if kind and kind not in DEVICE_TYPES:
        raise SpecError(f"{where}.type {kind!r} must be one of {', '.join(DEVICE_TYPES)}")
    permissions = text(f.get("permissions"), f"{where}.permissions")
    if permissions != NO_PERMISSIONS and set(permissions) - set("rwm"):
        raise SpecError(f"{where}.permissions {permissions!r} must be of r, w, m (or none)")
    return DeviceNode(
        path=path, host_path=host_path, type=kind,
        major=number(f.get("major"), f"{where}.major", 0, 2**32 - 1) or None,
        minor=number(f.get("minor"), f"{where}.minor", 0, 2**32 - 1),
        file_mode=number(f.get("fileMode"), f"{where}.fileMode", 0, 0o7777),
        permissions=permissions,
        uid=number(f.get("uid"), f"{where}.uid", 0, MAX_ID), gid=number(f.get("gid"), f"{where}.gid", 0, MAX_ID),
    )


def _mount(raw: Any, where: str, budget: Budget) -> Mount:
    f = fields(raw, where, ("hostPath", "containerPath", "options", "type"), budget)
    return Mount(host_path=absolute_path(f.get("hostPath"), f"{where}.hostPath"),
                 container_path=absolute_path(f.get("containerPath"), f"{where}.containerPath"),
                 type=text(f.get("type"), f"{where}.type"), options=strings(f.get("options"), f"{where}.options", budget))


def _hook(raw: Any, where: str, budget: Budget) -> Hook:
    f = fields(raw, where, ("hookName", "path", "args", "env", "timeout"), budget)
    name = text(f.get("hookName"), f"{where}.hookName", required=True)
    if name not in HOOK_NAMES:
        raise SpecError(f"{where}.hookName {name!r} must be one of {', '.join(HOOK_NAMES)}")
    timeout = number(f.get("timeout"), f"{where}.timeout", 1, 2**31 - 1)
    return Hook(hook_name=name, path=absolute_path(f.get("path"), f"{where}.path"),
                args=strings(f.get("args"), f"{where}.args", budget), env=_env(f.get("env"), f"{where}.env", budget),
                timeout=timeout)


def _flag(raw: Any, where: str) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise SpecError(f"{where} must be true or false")
    return raw


def _intel_rdt(raw: Any, where: str, budget: Budget) -> IntelRdt:
    f = fields(raw, where, ("closID", "l3CacheSchema", "memBwSchema", "enableCMT", "enableMBM", "schemata",
                            "enableMonitoring"), budget)
    clos = text(f.get("closID"), f"{where}.closID")
    if clos != "/" and (len(clos) >= 4096 or clos in (".", "..") or "/" in clos or "\n" in clos):
        raise SpecError(f"{where}.closID {clos!r} is not a valid class name")
    return IntelRdt(clos_id=clos, l3_cache_schema=text(f.get("l3CacheSchema"), f"{where}.l3CacheSchema"),
                    mem_bw_schema=text(f.get("memBwSchema"), f"{where}.memBwSchema"),
                    enable_cmt=_flag(f.get("enableCMT"), f"{where}.enableCMT"),
                    enable_mbm=_flag(f.get("enableMBM"), f"{where}.enableMBM"),
                    schemata=strings(f["schemata"], f"{where}.schemata", budget) if f.get("schemata") is not None else None,
                    enable_monitoring=_flag(f.get("enableMonitoring"), f"{where}.enableMonitoring"))


def _net_device(raw: Any, where: str, budget: Budget) -> NetDevice:
    f = fields(raw, where, ("hostInterfaceName", "name"), budget)
    return NetDevice(text(f.get("hostInterfaceName"), f"{where}.hostInterfaceName", required=True),
                     text(f.get("name"), f"{where}.name", required=True))


def _items(raw: Any, where: str, budget: Budget) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SpecError(f"{where} must be a list")
    budget.take(len(raw))
    return raw


def parse(raw: Any, where: str, budget: Budget) -> Edits:
    """The edits of a spec or device (None: none)."""
    if raw is None:
        return Edits()
    f = fields(raw, where, ("env", "deviceNodes", "netDevices", "hooks", "mounts", "intelRdt", "additionalGids"), budget)
    gids = tuple(number(g, f"{where}.additionalGids[{i}]", 0, MAX_ID) or 0
                 for i, g in enumerate(_items(f.get("additionalGids"), f"{where}.additionalGids", budget)))
    return Edits(
        env=_env(f.get("env"), f"{where}.env", budget),
        device_nodes=tuple(_device_node(d, f"{where}.deviceNodes[{i}]", budget)
                           for i, d in enumerate(_items(f.get("deviceNodes"), f"{where}.deviceNodes", budget))),
        mounts=tuple(_mount(m, f"{where}.mounts[{i}]", budget)
                     for i, m in enumerate(_items(f.get("mounts"), f"{where}.mounts", budget))),
        hooks=tuple(_hook(h, f"{where}.hooks[{i}]", budget)
                    for i, h in enumerate(_items(f.get("hooks"), f"{where}.hooks", budget))),
        additional_gids=tuple(g for g in gids if g),  # CDI: a gid of 0 is ignored
        intel_rdt=_intel_rdt(f["intelRdt"], f"{where}.intelRdt", budget) if f.get("intelRdt") is not None else None,
        net_devices=tuple(_net_device(n, f"{where}.netDevices[{i}]", budget)
                          for i, n in enumerate(_items(f.get("netDevices"), f"{where}.netDevices", budget))),
    )


def _unique(items: Iterable[Any], key: Any, what: str) -> tuple[Any, ...]:
    """items with exact repeats dropped; two different items of one key are a conflict."""
    seen: dict[Any, Any] = {}
    for item in items:
        k = key(item)
        if k in seen and seen[k] != item:
            raise InvalidArgument(f"CDI devices conflict: two different {what} {k!r}")
        seen.setdefault(k, item)
    return tuple(seen.values())


def merge(parts: Iterable[Edits]) -> Edits:
    """The edits of several specs and devices as one, or InvalidArgument when they contradict."""
    parts = list(parts)
    rdt = _unique((p.intel_rdt for p in parts if p.intel_rdt is not None), lambda _: "linux.intelRdt", "Intel RDT settings for")
    return Edits(
        env=_unique((e for p in parts for e in p.env), lambda e: e.partition("=")[0], "values for the variable"),
        device_nodes=_unique((d for p in parts for d in p.device_nodes), lambda d: d.path, "device nodes at"),
        mounts=_unique((m for p in parts for m in p.mounts), lambda m: m.container_path, "mounts at"),
        hooks=tuple(dict.fromkeys(h for p in parts for h in p.hooks)),
        additional_gids=tuple(dict.fromkeys(g for p in parts for g in p.additional_gids)),
        intel_rdt=rdt[0] if rdt else None,
        net_devices=_unique((n for p in parts for n in p.net_devices), lambda n: n.host_interface_name,
                            "network devices for the host interface"),
    )
