"""The CNI attachment cache: the exact network configuration and inputs used for a pod, and its result.

An entry is written before ADD (result null) and again after it, under <state_dir>/cni/cache,
so DEL can always run with what ADD ran with: after a crash in the middle of ADD, after a
restart, and after the network configuration in conf_dir changed or went away.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri_shim.network.cni import Attachment
from cri_shim.store import atomic
from cri_shim.store.codec import JsonRecord


@dataclass
class CacheEntry(JsonRecord):
    """One pod's attachment: the conflist, its source, the call inputs and the ADD result (None until done)."""

    conflist: dict[str, Any] = field(metadata={"json": "network"})
    source: str
    attachment: Attachment
    result: dict[str, Any] | None = None
    kind: str = "cri-shim-cni-cache-v1"


class AttachmentCache:
    """Entries by sandbox id, one JSON file each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def save(self, sandbox_id: str, entry: CacheEntry) -> None:
        """Writes the entry durably, the disk work on a worker thread (the entry encoded before it
        starts); the caller holds the sandbox's lock, so no other write of the file runs meanwhile."""
        await asyncio.to_thread(atomic.write_bytes, self.directory / f"{sandbox_id}.json", atomic.encode_json(entry.to_dict()))

    def load(self, sandbox_id: str) -> CacheEntry | None:
        """The entry, or None when there is none (a torn file counts as none: ADD never finished)."""
        try:
            return CacheEntry.from_dict(atomic.read_json(self.directory / f"{sandbox_id}.json"))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    async def remove(self, sandbox_id: str) -> None:
        """Removes the entry durably, on a worker thread (the caller holds the sandbox's lock)."""
        await asyncio.to_thread(atomic.remove, self.directory / f"{sandbox_id}.json")

    def ids(self) -> list[str]:
        """Sandbox ids with an entry on disk."""
        if not self.directory.is_dir():
            return []
        return [p.stem for p in self.directory.glob("*.json")]
