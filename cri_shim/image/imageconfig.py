"""The image configuration (OCI image config / Docker container config) containers start from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cri_shim.errors import InvalidArgument
from cri_shim.image.manifest import load_json
from cri_shim.image.reference import is_digest


@dataclass(frozen=True)
class ImageConfig:
    """What a container inherits from its image; every field as the config says (or empty)."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    volumes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    os: str = ""
    architecture: str = ""
    diff_ids: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"image config: {what} must be a list of strings")
    return list(value)


def parse(body: bytes) -> ImageConfig:
    """Parses and checks a config blob; diff_ids are what the layers must hash to uncompressed."""
    data = load_json(body, "image config")
    c = data.get("config") or {}
    if not isinstance(c, dict):
        raise InvalidArgument("image config: config is not an object")
    rootfs = data.get("rootfs") or {}
    diff_ids = _strings(rootfs.get("diff_ids"), "rootfs.diff_ids")
    bad = [d for d in diff_ids if not is_digest(d)]
    if bad:
        raise InvalidArgument(f"image config: unsupported diff_id {bad[0]!r}")
    return ImageConfig(
        entrypoint=_strings(c.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(c.get("Cmd"), "Cmd"),
        env=_strings(c.get("Env"), "Env"),
        working_dir=str(c.get("WorkingDir") or ""),
        user=str(c.get("User") or ""),
        stop_signal=str(c.get("StopSignal") or ""),
        volumes=sorted((c.get("Volumes") or {}).keys()),
        labels=dict(c.get("Labels") or {}),
        exposed_ports=sorted((c.get("ExposedPorts") or {}).keys()),
        os=str(data.get("os") or ""),
        architecture=str(data.get("architecture") or ""),
        diff_ids=diff_ids,
        raw=data,
    )


def user_identity(user: str) -> tuple[int | None, str]:
    """(uid, username) of a config User as the CRI reports it: the part before ':' is either a
    number (uid) or a name (username); the group part is not reported."""
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        return int(name), ""
    return None, name
