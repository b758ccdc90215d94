"""A durable, in-memory-indexed collection of records: one JSON file an object.

Sandboxes and containers (and images) each live in one RecordStore. The rules it keeps:
- a record is written to disk (atomically) before memory changes, so what is in memory was
  persisted, and a crash leaves the old record or the new, never a torn one;
- lookups, lists and name reservations are served from memory only (kubelet relists every
  second; nothing here touches runc or a namespace);
- ids may be given as unique prefixes, as crictl users type them;
- each id has an asyncio lock, so operations on one object are serialised without a global lock;
- write() and erase() are save() and delete() with the disk work (two fsyncs) on a worker
  thread, for callers no other write of the record can overlap: the event loop serves other requests while
  the disk syncs, where save() would stop it (under ten pods at a time, record writes held it
  for a quarter of its time);
- a record read in an earlier form (the record type says which) is written back in the current one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from cri_shim.errors import AlreadyExists, InvalidArgument, NotFound
from cri_shim.store import atomic

log = logging.getLogger("cri_shim.store")

# Bumped when a record's shape changes incompatibly; older files are migrated or refused on load.
SCHEMA_VERSION = 1


class Record(Protocol):
    """What a stored object provides: its id, its reserved name and a JSON form."""

    id: str
    name: str

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any: ...

    @classmethod
    def outdated(cls, data: dict[str, Any]) -> bool: ...


R = TypeVar("R", bound=Record)


class RecordStore(Generic[R]):
    """Records of one kind, under directory/<id>.json, mirrored in memory."""

    def __init__(self, kind: str, directory: Path, record_type: type[R]) -> None:
        self.kind = kind
        self.directory = directory
        self.record_type = record_type
        self._records: dict[str, R] = {}
        self._names: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def load(self, sweep: bool = True) -> list[tuple[Path, Exception]]:
        """Reads every record from disk into memory; returns the files that could not be read.

        A torn or unknown file is reported, not fatal: recovery decides what to clean up. sweep
        also removes the temporary files of writes a crash cut short; a store another process may
        be writing to at the time (the image store, beside an import) must not sweep.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stray in atomic.remove_temporaries(self.directory) if sweep else []:
            log.info("removed an unfinished record write", extra={"kind": self.kind, "path": str(stray)})
        bad: list[tuple[Path, Exception]] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = atomic.read_json(path)
                if data.get("schema") != SCHEMA_VERSION:
                    raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA_VERSION}")
                record = self.record_type.from_dict(data["record"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                bad.append((path, exc))
                continue
            if self.record_type.outdated(data["record"]):
                # Read in an earlier form (an upgrade): written back in the current one.
                atomic.write_json(path, {"schema": SCHEMA_VERSION, "record": record.to_dict()})
            self._records[record.id] = record
            if record.name:
                self._names[record.name] = record.id
        return bad

    def save(self, record: R) -> None:
        """Persists record, then makes it the one in memory (and reserves its name)."""
        self._check_name(record)
        atomic.write_json(self._path(record.id), self._document(record))
        self._keep(record)

    async def write(self, record: R) -> None:
        """save() with the disk work on a worker thread. The caller makes sure that no other write
        of the record runs meanwhile (it holds the record's lock, or the record is one that only
        its unfinished creation writes) and, for a new record, owns its name (as the one creation
        attempt for that name does). The record is encoded before the thread starts: the caller's
        other steps may change it while the disk syncs."""
        self._check_name(record)
        await asyncio.to_thread(atomic.write_bytes, self._path(record.id), atomic.encode_json(self._document(record)))
        self._keep(record)

    def _check_name(self, record: R) -> None:
        owner = self._names.get(record.name)
        if record.name and owner not in (None, record.id):
            raise AlreadyExists(f"{self.kind} name {record.name!r} is reserved by {owner}")

    @staticmethod
    def _document(record: R) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "record": record.to_dict()}

    def _keep(self, record: R) -> None:
        self._records[record.id] = record
        if record.name:
            self._names[record.name] = record.id

    def delete(self, record_id: str) -> None:
        """Removes the record from disk, then from memory, releasing its name."""
        atomic.remove(self._path(record_id))
        self._drop(record_id)

    async def erase(self, record_id: str) -> None:
        """delete() with the disk work on a worker thread. As for write(), no other write of the
        record may run meanwhile: the caller holds the record's lock, or the record is one only
        its unfinished creation writes (a create rolled back)."""
        await asyncio.to_thread(atomic.remove, self._path(record_id))
        self._drop(record_id)

    def _drop(self, record_id: str) -> None:
        record = self._records.pop(record_id, None)
        if record is not None and self._names.get(record.name) == record_id:
            del self._names[record.name]
        self._locks.pop(record_id, None)

    def get(self, record_id: str) -> R | None:
        """The record with exactly this id, or None."""
        return self._records.get(record_id)

    def resolve(self, id_or_prefix: str) -> R:
        """The record whose id is, or uniquely starts with, the given text."""
        if not id_or_prefix:
            raise InvalidArgument(f"{self.kind} id must not be empty")
        record = self._records.get(id_or_prefix)
        if record is not None:
            return record
        matches = [r for rid, r in self._records.items() if rid.startswith(id_or_prefix)]
        if not matches:
            raise NotFound(f"{self.kind} {id_or_prefix!r} not found")
        if len(matches) > 1:
            raise InvalidArgument(f"{self.kind} id prefix {id_or_prefix!r} is ambiguous")
        return matches[0]

    def find(self, id_or_prefix: str) -> R | None:
        """Like resolve(), but None for unknown or ambiguous ids (for list filters)."""
        try:
            return self.resolve(id_or_prefix)
        except (NotFound, InvalidArgument):
            return None

    def existing(self, id_or_prefix: str) -> R | None:
        """Like resolve(), but None for unknown ids, which Stop and Remove treat as already done.

        Empty and ambiguous ids are still refused (InvalidArgument): answering OK while acting
        on none of several objects would tell the caller one is gone that still runs.
        """
        try:
            return self.resolve(id_or_prefix)
        except NotFound:
            return None

    def by_name(self, name: str) -> R | None:
        """The record holding a name, or None."""
        record_id = self._names.get(name)
        return self._records.get(record_id) if record_id else None

    def lock(self, record_id: str) -> asyncio.Lock:
        """The lock serialising operations on one object."""
        return self._locks.setdefault(record_id, asyncio.Lock())

    def __iter__(self) -> Iterator[R]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def _path(self, record_id: str) -> Path:
        return self.directory / f"{record_id}.json"
