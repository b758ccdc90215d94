"""The image store: records, names, layers, blobs and leases under one directory.

Layout under <state_dir>/images: blobs/ and ingest/ (content), layers/ (unpacked layers),
records/ (one JSON file an image), leases/ (root filesystems in use), empty/ (the bottom layer
of overlays that have no other), lock and generation.

Writers are the daemon and `cri-shim images import`, which may run at the same time: every
change of records, layers or blobs is made holding an flock on `lock` (short sections only:
downloads and unpacking happen outside it) and bumps `generation`, whose change makes the
other process reload its in-memory index before it next answers. Reads are served from
memory, after one stat of `generation`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from cri_shim.errors import Internal, InvalidArgument, NotFound
from cri_shim.image import imageconfig
from cri_shim.image.content import ContentStore
from cri_shim.image.imageconfig import ImageConfig
from cri_shim.image.layers import LayerStore
from cri_shim.image.records import ImageRecord, NameIndex, lookup_key, normalise
from cri_shim.store import atomic
from cri_shim.store.records import RecordStore

log = logging.getLogger("cri_shim.image.store")


class ImageStore:
    """Every image on the node; lookups by tag, repo digest, ID or unique ID prefix."""

    def __init__(self, root: Path, pinned: list[str] | None = None) -> None:
        self.root = root
        self.content = ContentStore(root)
        self.layers = LayerStore(root / "layers")
        self.records: RecordStore[ImageRecord] = RecordStore("image", root / "records", ImageRecord)
        self.names = NameIndex()
        self.lease_dir = root / "leases"
        self.empty = root / "empty"
        self.leases: dict[str, list[str]] = {}
        self._pending: Counter[str] = Counter()
        self._configs: dict[str, ImageConfig] = {}
        self._mutex = asyncio.Lock()
        self._generation: tuple[int, int] | None = None
        self._pinned: set[str] = set()
        self.set_pinned(pinned or [])

    def set_pinned(self, pinned: list[str]) -> None:
        """The images reported pinned from now on (images.pinned_images, also on a reload)."""
        names = set()
        for text in pinned:
            try:
                names.add(normalise(text) if not text.startswith("sha256:") else text)
            except InvalidArgument:
                log.warning("ignoring invalid pinned image", extra={"image": text})
        self._pinned = names

    # --- opening and reloading ----------------------------------------------------------------

    def open(self, reconcile: bool = True) -> None:
        """Loads the store. The daemon reconciles it at start (removes partial work, orphans and
        images with missing content); an importer running beside the daemon must not."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lease_dir.mkdir(exist_ok=True, mode=0o700)
        self.empty.mkdir(exist_ok=True, mode=0o755)
        with self._flock():
            self.content.open()
            self.layers.open()
            self._load(sweep=reconcile)
            self._load_leases()
            if reconcile:
                self._reconcile()

    def _load(self, sweep: bool = False) -> None:
        """Reads the records; sweep (the daemon's start, under the store lock) also drops unfinished writes."""
        self.records = RecordStore("image", self.root / "records", ImageRecord)
        for path, exc in self.records.load(sweep):
            log.warning("dropping unreadable image record", extra={"path": str(path), "error": str(exc)})
            path.unlink(missing_ok=True)
        self.names.rebuild(list(self.records))
        self._configs.clear()
        self._generation = self._generation_stamp()

    def _load_leases(self) -> None:
        self.leases = {}
        for path in self.lease_dir.glob("*.json"):
            try:
                data = atomic.read_json(path)
                if not Path(data["dir"]).exists():
                    path.unlink()
                    continue
                self.leases[path.stem] = list(data["chains"])
            except (OSError, ValueError, KeyError) as exc:
                log.warning("dropping unreadable lease", extra={"path": str(path), "error": str(exc)})
                path.unlink(missing_ok=True)

    def _reconcile(self) -> None:
        for record in self.records:
            missing = [c for c in record.chain_ids if not self.layers.has(c)]
            missing += [b for b in record.blobs if not self.content.has(b)]
            if missing:
                log.warning("dropping image with missing content", extra={"image": record.image_id, "missing": missing[:3]})
                self.records.delete(record.id)
        self.names.rebuild(list(self.records))
        _delete_dirs(self._collect(list(self.layers.layers), self.content.digests(), changed=True))

    def refresh(self) -> None:
        """Reloads the index when another process (an import) changed the store."""
        if self._generation_stamp() != self._generation:
            self.layers.reload()
            self.content.reload()
            self._load()

    def _generation_stamp(self) -> tuple[int, int]:
        try:
            st = os.stat(self.root / "generation")
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def _bump(self) -> None:
        atomic.write_bytes(self.root / "generation", str(time.time_ns()).encode(), 0o644)
        self._generation = self._generation_stamp()

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """This process's mutex, then the store's flock (taken off the event loop)."""
        async with self._mutex:
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                self.refresh()
                yield
            finally:
                os.close(fd)

    def close(self) -> None:
        """Ends what the store runs beside the daemon (the layer helper)."""
        self.layers.close()

    # --- reads --------------------------------------------------------------------------------

    def find(self, text: str) -> ImageRecord | None:
        """The image a tag, repo digest, full ID or unique ID prefix names, or None.

        An ID prefix of several images is InvalidArgument: RemoveImage answering OK while
        removing none of them would tell the caller an image is gone that is still there.
        """
        self.refresh()
        name, candidate = lookup_key(text)
        if name is not None:
            owner = self.names.owner(name)
            if owner is not None:
                return self.records.get(owner)
        if candidate is not None:
            try:
                return self.records.resolve(candidate)
            except NotFound:
                return None
        return None

    def resolve(self, text: str) -> ImageRecord:
        """Like find(), but NotFound when absent (CreateContainer with an image that is not there)."""
        record = self.find(text)
        if record is None:
            raise NotFound(f"image {text!r} not found")
        return record

    def list(self) -> list[ImageRecord]:
        self.refresh()
        return sorted(self.records, key=lambda r: r.created)

    def config(self, record: ImageRecord) -> ImageConfig:
        cached = self._configs.get(record.id)
        if cached is None:
            try:
                cached = imageconfig.parse(self.content.read(record.config_digest))
            except OSError as exc:
                raise Internal(f"image {record.image_id}: config blob unreadable: {exc}") from None
            self._configs[record.id] = cached
        return cached

    def pinned(self, record: ImageRecord) -> bool:
        return bool(self._pinned & ({record.image_id} | set(record.names)))

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) of the store from the totals recorded at unpack, not from a tree walk."""
        layer_bytes, layer_inodes = self.layers.usage()
        blobs = self.content.sizes
        return layer_bytes + sum(blobs.values()), layer_inodes + len(blobs) + len(self.records)

    # --- writes -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self, chains: list[str]) -> Iterator[None]:
        """Keeps layers from being collected while an image using them is being stored."""
        self._pending.update(chains)
        try:
            yield
        finally:
            self._pending.subtract(chains)
            self._pending += Counter()

    async def commit(self, record: ImageRecord) -> ImageRecord:
        """Stores an image whose layers and blobs are in place, taking its names from other images.

        An image already stored with every name and blob of record (a re-pull of what is present)
        is returned as it is: nothing would change, so neither the lock nor a write is needed.
        """
        self.refresh()
        existing = self.records.get(record.id)
        if existing is not None and self._holds(existing, record):
            return existing
        await self.layers.sync()  # the layers on disk before a record names them
        async with self._exclusive():
            missing = [c for c in record.chain_ids if not self.layers.has(c)]
            missing += [b for b in record.blobs if not self.content.has(b)]
            if missing:
                raise Internal(f"{missing[0]} was removed while image {record.image_id} was being stored; retry")
            existing = self.records.get(record.id)
            if existing is not None:
                record.repo_tags = _union(existing.repo_tags, record.repo_tags)
                record.repo_digests = _union(existing.repo_digests, record.repo_digests)
                record.blobs = _union(existing.blobs, record.blobs)
                record.created = existing.created
            for name in record.names:
                owner = self.names.owner(name)
                if owner not in (None, record.id):
                    self._take_name(owner, name)
            self.records.save(record)
            self.names.add(record)
            self._bump()
        return record

    def _holds(self, existing: ImageRecord, record: ImageRecord) -> bool:
        """True when existing owns every name and blob of record and all its content is there."""
        return (all(self.names.owner(name) == existing.id for name in record.names)
                and set(record.blobs) <= set(existing.blobs)
                and all(self.layers.has(c) for c in existing.chain_ids)
                and all(self.content.has(b) for b in existing.blobs))

    def _take_name(self, owner_id: str, name: str) -> None:
        owner = self.records.get(owner_id)
        if owner is None:
            return
        self.names.drop(owner)
        owner.repo_tags = [t for t in owner.repo_tags if t != name]
        owner.repo_digests = [d for d in owner.repo_digests if d != name]
        self.records.save(owner)
        self.names.add(owner)

    async def remove(self, text: str) -> ImageRecord | None:
        """Removes the image text names, with all its names; its layers and blobs go unless
        another image, a pull in progress or a container's root filesystem still uses them."""
        async with self._exclusive():
            record = self.find(text)
            if record is None:
                return None
            self.records.delete(record.id)
            self.names.drop(record)
            self._configs.pop(record.id, None)
            trash = self._collect(record.chain_ids, record.blobs, changed=True)
        await asyncio.to_thread(_delete_dirs, trash)
        log.info("image removed", extra={"image": record.image_id, "names": record.names})
        return record

    async def discard_unused(self, chains: list[str], blobs: list[str]) -> None:
        """Removes those of these layers and blobs that nothing uses (after a failed pull, or a
        container's rootfs released). When all are still in use, as a removed container's layers
        are while its image is kept, there is nothing to take the store's lock for: this process
        alone removes images, and other processes only add what is in use."""
        used_chains, used_blobs = self._in_use()
        if used_chains.issuperset(chains) and used_blobs.issuperset(blobs):
            return
        async with self._exclusive():
            trash = self._collect(chains, blobs)
        await asyncio.to_thread(_delete_dirs, trash)

    def _collect(self, chains: list[str], blobs: list[str], changed: bool = False) -> list[Path]:
        """Takes those of these layers and blobs that nothing uses out of the store (under the
        lock); returns the renamed-aside layer directories for the caller to delete. Other
        processes are told (the generation bumped) when the caller changed the store (changed)
        or anything was taken out, not otherwise: a container's exit mostly takes nothing,
        and the bump is a durable write."""
        used_chains, used_blobs = self._in_use()
        trash = [t for c in chains if c not in used_chains and (t := self.layers.remove(c)) is not None]
        for digest in blobs:
            if digest not in used_blobs:
                changed |= self.content.has(digest)
                self.content.delete(digest)
        if changed or trash:
            self._bump()
        return trash

    def _in_use(self) -> tuple[set[str], set[str]]:
        chains = {c for r in self.records for c in r.chain_ids}
        chains |= {c for leased in self.leases.values() for c in leased} | set(self._pending)
        return chains, {b for r in self.records for b in r.blobs}

    # --- leases: root filesystems in use ------------------------------------------------------

    @staticmethod
    def lease_key(container_dir: Path) -> str:
        return hashlib.sha256(str(container_dir).encode()).hexdigest()[:32]

    async def lease_layers(self, container_dir: Path, record: ImageRecord) -> None:
        """Records (durably, before the mount) that a container's rootfs uses the image's layers."""
        async with self._exclusive():
            if self.records.get(record.id) is None or not all(self.layers.has(c) for c in record.chain_ids):
                raise NotFound(f"image {record.image_id} was removed")
            key = self.lease_key(container_dir)
            lease = atomic.encode_json({"dir": str(container_dir), "chains": record.chain_ids})
            await asyncio.to_thread(atomic.write_bytes, self.lease_dir / f"{key}.json", lease)
            self.leases[key] = list(record.chain_ids)

    async def unlease(self, container_dir: Path) -> list[str]:
        """Drops a container's lease (the file removed on a worker thread); returns the layers it held."""
        key = self.lease_key(container_dir)
        await asyncio.to_thread(atomic.remove, self.lease_dir / f"{key}.json")
        return self.leases.pop(key, [])


def _union(first: list[str], second: list[str]) -> list[str]:
    return first + [x for x in second if x not in first]


def _delete_dirs(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
