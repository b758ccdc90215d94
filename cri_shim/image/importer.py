"""Imports images from a tarball for air-gapped nodes: an OCI image layout or a `docker save`.

The tarball is only read (never extracted): its members are looked up by name, copied to
the ingest directory, verified (blob digests for OCI layouts, diff_ids for both), applied by
the same confined layer helper a pull uses, and committed through the same path
(pull.store_image). Imports work on the store directly, beside a running daemon or not: the
store's flock and generation file keep the two consistent (see cri_shim.image.store).
"""

from __future__ import annotations

import asyncio
import json
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cri_shim.errors import InvalidArgument
from cri_shim.image import imageconfig, manifest, reference
from cri_shim.image.content import sha256_digest
from cri_shim.image.layers import chain_ids
from cri_shim.image.pull import store_image
from cri_shim.image.records import ImageRecord
from cri_shim.image.store import ImageStore

NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


@dataclass
class Candidate:
    """One image found in the archive, before its layers are applied."""

    config: bytes
    layers: list[str]  # member names of the layer archives, bottom first
    layer_digests: list[str]  # their blob digests when the archive declares them ("" for docker-archive)
    repo_tags: list[str]
    repo_digests: list[str]
    blobs: dict[str, bytes]


class Archive:
    """Random access to the members of the tarball by their cleaned names."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")
        except (OSError, tarfile.TarError) as exc:
            raise InvalidArgument(f"{path}: not a readable tar archive: {exc}") from None
        self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isreg()}

    def read(self, name: str, limit: int = 64 * 1024 * 1024) -> bytes:
        member = self.member(name)
        if member.size > limit:
            raise InvalidArgument(f"archive member {name} is larger than {limit} bytes")
        source = self.tar.extractfile(member)
        assert source is not None
        return source.read()

    def member(self, name: str) -> tarfile.TarInfo:
        member = self.members.get(name.removeprefix("./"))
        if member is None:
            raise InvalidArgument(f"archive has no member {name}")
        return member

    def copy(self, name: str, sink: Callable[[bytes], None], tick: Callable[[int], None]) -> None:
        source = self.tar.extractfile(self.member(name))
        assert source is not None
        while chunk := source.read(1 << 20):
            sink(chunk)
            tick(len(chunk))


def _oci_candidates(archive: Archive) -> list[Candidate]:
    found = []
    index = archive.read("index.json")
    entries = json.loads(index).get("manifests", [])
    for desc, entry in zip(manifest.parse_index(index, "index.json"), entries):
        blobs: dict[str, bytes] = {}
        digest = desc.digest
        body = _blob(archive, desc)
        kind = manifest.media_type_of(body, desc.media_type, f"manifest {digest}")
        if kind in manifest.INDEX_TYPES:
            blobs[digest] = body
            chosen = manifest.choose_platform(manifest.parse_index(body, digest), digest)
            body = _blob(archive, chosen)
            kind = manifest.media_type_of(body, chosen.media_type, f"manifest {chosen.digest}")
        image = manifest.parse_manifest(body, kind, f"manifest in {digest}")
        blobs[sha256_digest(body)] = body
        config = _blob(archive, image.config)
        blobs[image.config.digest] = config
        name = _name_of(dict(entry.get("annotations") or {}))
        ref = reference.parse(name) if name else None
        found.append(Candidate(
            config, [f"blobs/sha256/{layer.digest[7:]}" for layer in image.layers], [layer.digest for layer in image.layers],
            [str(ref)] if ref and ref.tag else [], [ref.with_digest(digest)] if ref else [], blobs,
        ))
    return found


def _name_of(annotations: dict[str, str]) -> str:
    """The full image name an OCI layout entry carries; a bare tag names no repository."""
    for key in NAME_ANNOTATIONS:
        value = annotations.get(key, "")
        if value and ("/" in value or ":" in value.split("/")[-1]):
            return value
    return ""


def _blob(archive: Archive, desc: manifest.Descriptor) -> bytes:
    data = archive.read(f"blobs/sha256/{desc.digest[7:]}")
    if sha256_digest(data) != desc.digest:
        raise InvalidArgument(f"archive blob {desc.digest} does not match its digest; refused")
    return data


def _docker_candidates(archive: Archive) -> list[Candidate]:
    entries = json.loads(archive.read("manifest.json"))
    if not isinstance(entries, list):
        raise InvalidArgument("manifest.json is not a list")
    found = []
    for entry in entries:
        config = archive.read(entry["Config"])
        tags = [str(reference.parse(t)) for t in entry.get("RepoTags") or []]
        found.append(Candidate(config, list(entry["Layers"]), [""] * len(entry["Layers"]), tags, [], {sha256_digest(config): config}))
    return found


async def import_archive(store: ImageStore, path: Path, progress: Callable[[int, int], None] | None = None) -> list[ImageRecord]:
    """Imports every image of the tarball; returns their records."""
    archive = await asyncio.to_thread(Archive, path)
    oci = "index.json" in archive.members
    if not oci and "manifest.json" not in archive.members:
        raise InvalidArgument(f"{path}: neither an OCI image layout (index.json) nor a docker-archive (manifest.json)")
    candidates = await asyncio.to_thread(_oci_candidates if oci else _docker_candidates, archive)
    total = sum(archive.member(name).size for c in candidates for name in c.layers)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    records = []
    for candidate in candidates:
        config = imageconfig.parse(candidate.config)
        if len(config.diff_ids) != len(candidate.layers):
            raise InvalidArgument(f"{path}: image has {len(candidate.layers)} layers but its config lists {len(config.diff_ids)}")
        chains = chain_ids(config.diff_ids)
        record = ImageRecord(
            id=sha256_digest(candidate.config)[7:], repo_tags=candidate.repo_tags, repo_digests=candidate.repo_digests,
            chain_ids=chains, blobs=list(candidate.blobs), created=time.time(),
            size=len(candidate.config) + sum(archive.member(n).size for n in candidate.layers),
        )
        layers = _apply_layers(store, archive, candidate, config.diff_ids, chains, tick)
        records.append(await store_image(store, record, candidate.blobs, layers))
    return records


async def _apply_layers(store: ImageStore, archive: Archive, candidate: Candidate, diff_ids: list[str], chains: list[str],
                        tick: Callable[[int], None]) -> None:
    for i, (name, digest) in enumerate(zip(candidate.layers, candidate.layer_digests)):
        if store.layers.has(chains[i]):
            tick(archive.member(name).size)
            continue
        # Verified twice over: the blob digest the layout declares (none in a docker-archive) as it
        # is copied, and the diff_id by the helper as it is applied.
        ingest = store.content.ingest(digest, None, f"layer {name}")
        try:
            await asyncio.to_thread(archive.copy, name, ingest.write, tick)
            await asyncio.to_thread(ingest.verify)
            await store.layers.apply(ingest.path, diff_ids[i], chains[i], chains[:i], lambda _n: None)
        finally:
            ingest.discard()
