"""Image records (one per config digest) and the index of their names.

An image is identified by its config digest, whatever it was pulled as. Its names are the
repo tags (`docker.io/library/busybox:latest`) and repo digests (`name@sha256:<manifest or
index digest>`) it was pulled or imported under; a name belongs to one image at a time, so a
tag pulled again for new content moves to the new image and the old one stays, untagged,
until removed (as CRI-O and docker keep it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cri_shim.errors import InvalidArgument
from cri_shim.image import reference
from cri_shim.image.reference import HEX
from cri_shim.store.codec import JsonRecord


@dataclass
class ImageRecord(JsonRecord):
    id: str  # hex of the config digest; Image.id is "sha256:" + id
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    chain_ids: list[str] = field(default_factory=list)  # unpacked layers, bottom first
    blobs: list[str] = field(default_factory=list)  # config, manifest(s), index kept in the content store
    size: int = 0  # compressed layers + config, as containerd reports
    created: float = 0.0
    name: str = ""  # RecordStore's single reserved name is unused: images have many names

    @property
    def image_id(self) -> str:
        return f"sha256:{self.id}"

    @property
    def config_digest(self) -> str:
        return self.image_id

    @property
    def names(self) -> list[str]:
        return self.repo_tags + self.repo_digests



def normalise(text: str) -> str:
    """The canonical name of a reference (`busybox` -> `docker.io/library/busybox:latest`)."""
    return str(reference.parse(text))


def id_candidate(text: str) -> str | None:
    """The hex part of a full or prefix image ID (`sha256:3f5...`, `3f5...`), else None."""
    hexpart = text[7:] if text.startswith("sha256:") else text
    return hexpart if HEX.match(hexpart) else None


class NameIndex:
    """Maps every repo tag and repo digest to the id of the image holding it."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}

    def rebuild(self, records: list[ImageRecord]) -> None:
        self._owner = {name: r.id for r in records for name in r.names}

    def owner(self, name: str) -> str | None:
        return self._owner.get(name)

    def add(self, record: ImageRecord) -> None:
        for name in record.names:
            self._owner[name] = record.id

    def drop(self, record: ImageRecord) -> None:
        for name in record.names:
            if self._owner.get(name) == record.id:
                del self._owner[name]


def lookup_key(text: str) -> tuple[str | None, str | None]:
    """(normalised name, id candidate) to look text up by; either may be None.

    A full `sha256:<64 hex>` or bare 64-hex text is an ID only; other text is tried as a name
    first and then, if it is hex, as an ID prefix (crictl users type short IDs).
    """
    if not text:
        raise InvalidArgument("image reference must not be empty")
    candidate = id_candidate(text)
    if candidate is not None and (len(candidate) == 64 or text.startswith("sha256:")):
        return None, candidate
    try:
        name = normalise(text)
    except InvalidArgument:
        if candidate is None:
            raise
        name = None
    return name, candidate
