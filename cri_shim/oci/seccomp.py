"""linux.seccomp: which profile a container gets, and the shipped RuntimeDefault profile.

Choice, as containerd makes it: privileged containers get none; the `seccomp` field wins
over the deprecated `seccomp_profile_path` string ("runtime/default", "docker/default",
"unconfined", "localhost/<abs path>"); no profile at all means unconfined, or RuntimeDefault
when the operator asks for it (runtime.seccomp_default_when_unset). A Localhost
profile is an absolute path to an OCI LinuxSeccomp JSON document, used as written. The
RuntimeDefault profile is ours (cri_shim/data/seccomp-default.json), in a small format whose
rules may depend on the container's capabilities and the host architecture; it is turned
into the OCI form per container.
"""

from __future__ import annotations

import json
import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument

DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "data" / "seccomp-default.json"
RUNTIME_DEFAULT = "runtime/default"
UNCONFINED = "unconfined"
_RULE_KEYS = ("names", "action", "args", "errnoRet")


def choose(sc: api_pb2.LinuxContainerSecurityContext) -> tuple[str, str]:
    """(kind, localhost path): kind is runtime/default, unconfined or localhost."""
    if sc.HasField("seccomp"):
        p = sc.seccomp
        if p.profile_type == api_pb2.SecurityProfile.RuntimeDefault:
            return RUNTIME_DEFAULT, ""
        if p.profile_type == api_pb2.SecurityProfile.Unconfined:
            return UNCONFINED, ""
        if p.profile_type == api_pb2.SecurityProfile.Localhost:
            return "localhost", _absolute(p.localhost_ref)
        # proto3 keeps enum numbers it does not know: never read one as some profile
        raise InvalidArgument(f"unknown seccomp profile type {p.profile_type}")
    path = sc.seccomp_profile_path
    if path in ("", UNCONFINED):
        return UNCONFINED, ""
    if path in (RUNTIME_DEFAULT, "docker/default"):
        return RUNTIME_DEFAULT, ""
    if path.startswith("localhost/"):
        return "localhost", _absolute(path[len("localhost/"):])
    raise InvalidArgument(f"unknown seccomp profile {path!r}")


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"seccomp localhost profile {path!r} must be an absolute path")
    return path


def load_localhost(path: str) -> dict[str, Any]:
    """An OCI LinuxSeccomp object from a JSON file on the host."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot load seccomp profile {path!r}: {exc}") from exc
    if not isinstance(data, dict) or "defaultAction" not in data:
        raise InvalidArgument(f"seccomp profile {path!r} has no defaultAction")
    return data


@lru_cache(maxsize=4)
def _load_default(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _kernel_at_least(version: str) -> bool:
    want = tuple(int(x) for x in version.split("."))
    have = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    return have >= want


def runtime_default(caps: list[str], profile_path: str = "", arch: str = "") -> dict[str, Any]:
    """The RuntimeDefault profile in OCI form for a container with these bounding caps."""
    profile = _load_default(profile_path or str(DEFAULT_PROFILE))
    arch = arch or platform.machine()
    syscalls = []
    for rule in profile["rules"]:
        if not set(rule.get("caps", [])) <= set(caps) or set(rule.get("notCaps", [])) & set(caps):
            continue
        if "arches" in rule and arch not in rule["arches"] or arch in rule.get("notArches", []):
            continue
        if "minKernel" in rule and not _kernel_at_least(rule["minKernel"]):
            continue
        syscalls.append({k: rule[k] for k in _RULE_KEYS if k in rule})
    return {
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": profile["architectures"].get(arch, []),
        "syscalls": syscalls,
    }


def build(sc: api_pb2.LinuxContainerSecurityContext, privileged: bool, caps: list[str],
          default_profile: str = "", default_when_unset: bool = False) -> dict[str, Any] | None:
    """linux.seccomp for the container, or None for no filter; default_when_unset gives the
    RuntimeDefault profile to a container that names none (not to an explicit Unconfined)."""
    if privileged:
        return None
    kind, path = choose(sc)
    if kind == UNCONFINED and default_when_unset and not sc.HasField("seccomp") and not sc.seccomp_profile_path:
        kind = RUNTIME_DEFAULT
    if kind == UNCONFINED:
        return None
    if kind == RUNTIME_DEFAULT:
        return runtime_default(caps, default_profile)
    return load_localhost(path)
