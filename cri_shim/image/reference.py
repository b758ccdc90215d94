"""Image references, normalised the way kubelet, containerd and CRI-O do.

`busybox` is `docker.io/library/busybox:latest`; a first component with a dot, a colon or
named `localhost` is a registry host; a reference by digest (`name@sha256:...`) carries no
tag. Image IDs (`sha256:<hex>` or a unique hex prefix) are not references: the store looks
those up itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cri_shim.errors import InvalidArgument

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.?)+(?::[0-9]+)?$|^\[[0-9a-fA-F:.]+\](?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
HEX = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: registry domain, repository path, and a tag or a digest."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """domain/path, the repository name used in repo_tags and repo_digests."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What the registry is asked for: the digest when there is one, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"

    def with_digest(self, digest: str) -> str:
        """name@digest: the repo digest this repository gives to a manifest."""
        return f"{self.name}@{digest}"


def is_digest(text: str) -> bool:
    """True for a full `sha256:<64 hex>` digest."""
    return bool(DIGEST.match(text))


def split_domain(name: str) -> tuple[str, str]:
    """(domain, path) of a name; Docker Hub names get the `library/` prefix when bare."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse(text: str) -> Reference:
    """The normalised reference of text, or InvalidArgument saying what is wrong with it."""
    if not text or text != text.strip():
        raise InvalidArgument(f"invalid image reference {text!r}: empty or surrounded by spaces")
    rest, _, digest = text.partition("@")
    if digest and not is_digest(digest):
        raise InvalidArgument(f"invalid image reference {text!r}: digest must be sha256:<64 hex digits>")
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidArgument(f"invalid image reference {text!r}: bad tag {tag!r}")
    domain, path = split_domain(name)
    if not _DOMAIN.match(domain):
        raise InvalidArgument(f"invalid image reference {text!r}: bad registry host {domain!r}")
    if not path or not all(_COMPONENT.match(c) for c in path.split("/")):
        raise InvalidArgument(
            f"invalid image reference {text!r}: repository must be lowercase letters, digits and separators"
        )
    if len(domain) + 1 + len(path) > 255:
        raise InvalidArgument(f"invalid image reference {text!r}: name longer than 255 characters")
    if digest:
        # A digest pins the content; a tag beside it is only a label, and not kept (as docker pull).
        return Reference(domain, path, "", digest)
    return Reference(domain, path, tag or DEFAULT_TAG, "")
