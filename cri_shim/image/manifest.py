"""Manifests and indexes (OCI and Docker schema 2): parsing, validation and platform choice."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from typing import Any

from cri_shim.errors import InvalidArgument, Unimplemented
from cri_shim.image.reference import is_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json", "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

# Layer media types we can apply; compression is sniffed from the bytes, not trusted from these.
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "armv6l": "arm",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386", "i386": "386"}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] = field(default_factory=dict, compare=False)
    urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: Any, what: str) -> Descriptor:
        if not isinstance(data, dict):
            raise InvalidArgument(f"{what}: descriptor is not an object")
        digest, size = data.get("digest", ""), data.get("size")
        if not is_digest(digest):
            raise InvalidArgument(f"{what}: unsupported or malformed digest {digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{what}: descriptor of {digest} has no valid size")
        return cls(str(data.get("mediaType", "")), digest, size, dict(data.get("platform") or {}), tuple(data.get("urls") or ()))


@dataclass(frozen=True)
class Manifest:
    """An image manifest: its config descriptor and its layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) of this machine in OCI terms."""
    machine = platform.machine()
    arch = _ARCH.get(machine, machine)
    variant = {"armv7l": "v7", "armv6l": "v6", "aarch64": "v8", "arm64": "v8"}.get(machine, "")
    return "linux", arch, variant


def load_json(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{what}: not a JSON object")
    return data


def media_type_of(body: bytes, header_type: str, what: str) -> str:
    """The document's media type: its own mediaType field, else the Content-Type it came with."""
    data = load_json(body, what)
    kind = data.get("mediaType") or header_type.split(";")[0].strip()
    if kind in DOCKER_SCHEMA1 or data.get("schemaVersion") == 1:
        raise Unimplemented(f"{what}: Docker schema 1 manifests are not supported; push the image as schema 2 or OCI")
    if not kind:
        # OCI allows omitting mediaType: tell an index from a manifest by its fields.
        kind = OCI_INDEX if "manifests" in data else OCI_MANIFEST
    return kind


def parse_index(body: bytes, what: str) -> list[Descriptor]:
    entries = load_json(body, what).get("manifests")
    if not isinstance(entries, list):
        raise InvalidArgument(f"{what}: index has no manifests list")
    return [Descriptor.parse(e, f"{what} entry") for e in entries]


def parse_manifest(body: bytes, kind: str, what: str) -> Manifest:
    data = load_json(body, what)
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgument(f"{what}: manifest has no layers list")
    parsed = tuple(Descriptor.parse(layer, f"{what} layer") for layer in layers)
    for layer in parsed:
        if layer.media_type and layer.media_type not in LAYER_TYPES:
            raise Unimplemented(f"{what}: layer {layer.digest} has unsupported media type {layer.media_type}")
    return Manifest(kind, Descriptor.parse(data.get("config"), f"{what} config"), parsed)


def choose_platform(entries: list[Descriptor], what: str) -> Descriptor:
    """The entry for linux on this machine's architecture (best variant), as containerd picks."""
    want_os, want_arch, want_variant = host_platform()
    candidates = [
        e for e in entries
        if e.media_type in INDEX_TYPES + MANIFEST_TYPES + ("",)
        and e.platform.get("os", "linux") == want_os and e.platform.get("architecture") == want_arch
    ]
    if not candidates:
        offered = sorted({f"{e.platform.get('os')}/{e.platform.get('architecture')}" for e in entries})
        raise InvalidArgument(f"{what}: no image for {want_os}/{want_arch}; the index offers {', '.join(offered) or 'nothing'}")

    def rank(e: Descriptor) -> int:
        variant = e.platform.get("variant", "")
        return 0 if variant == want_variant else 1 if not variant else 2

    return sorted(candidates, key=rank)[0]
