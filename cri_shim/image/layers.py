"""Unpacked layers, each once, keyed by chain ID and shared by every image that has it.

A layer's directory is layers/<chain id hex>/diff: an overlayfs lower directory (whiteouts
as 0/0 character devices, opaque directories marked). The key is the chain ID, not the
diff ID, because what a layer unpacks to depends on its parents (a hardlink to a file of a
lower layer copies that file up), exactly as containerd's snapshots are keyed. A layer is
applied into layers/.tmp-* by the confined helper (cri_shim.image.tarapply, through
cri_shim.image.unpacker) and renamed into place only once its uncompressed digest matched the
config's diff_id.

Durability: nothing of a layer is fsynced as it is written (an fsync of every file and
directory would cost more than the unpacking). A layer becomes part of the node's images only
when an image record names it, and ImageStore.commit first calls sync(): one syncfs of the
store's filesystem, so every layer applied before the record is on disk, files and all, before
the record is. A layer no record names after a crash is collected at start.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cri_shim.image import unpacker
from cri_shim.image.content import DigestMismatch, owner_alive, sha256_digest, temp_name
from cri_shim.linux.syscalls import syncfs
from cri_shim.store import atomic
from cri_shim.store.codec import JsonRecord

log = logging.getLogger("cri_shim.image.layers")


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain IDs of a layer stack: the first is its diff ID, each next one hashes its parent's."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else sha256_digest(f"{chains[-1]} {diff_id}".encode()))
    return chains


@dataclass(frozen=True)
class Layer(JsonRecord):
    """An unpacked layer: its chain and diff IDs, its parent's chain ID, and its disk usage."""

    chain_id: str
    diff_id: str
    parent: str
    bytes: int
    inodes: int

    @property
    def key(self) -> str:
        return self.chain_id[7:]


class LayerStore:
    """layers/<hex>/{diff,layer.json}; usage of each layer recorded once, at unpack."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers: dict[str, Layer] = {}
        self._applied = 0  # layers this process applied, and how many of them sync() made durable
        self._synced = 0

    def open(self) -> None:
        """Removes what dead unpackers left half-done, then loads the layers.

        A layer whose layer.json is unreadable is removed too: one is only ever renamed into
        place complete, so it is one a power cut caught before sync(), which no record names,
        and kept it would stand in the way of unpacking that layer again."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in self.root.iterdir():
            if path.name.startswith(".") and not owner_alive(path.name):
                shutil.rmtree(path, ignore_errors=True)
        for path in self.reload():
            shutil.rmtree(path, ignore_errors=True)

    def reload(self) -> list[Path]:
        """Reads every layer's record (another process may have added layers); returns the
        layer directories whose record is unreadable, which are left out."""
        self.layers = {}
        unreadable = []
        for path in self.root.iterdir():
            if path.name.startswith("."):
                continue
            try:
                layer = Layer.from_dict(atomic.read_json(path / "layer.json"))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable layer", extra={"layer": path.name, "error": str(exc)})
                unreadable.append(path)
                continue
            self.layers[layer.chain_id] = layer
        return unreadable

    def has(self, chain_id: str) -> bool:
        return chain_id in self.layers and (self.root / chain_id[7:] / "diff").is_dir()

    def diff_dir(self, chain_id: str) -> Path:
        return self.root / chain_id[7:] / "diff"

    def usage(self) -> tuple[int, int]:
        return sum(layer.bytes for layer in self.layers.values()), sum(layer.inodes for layer in self.layers.values())

    async def apply(self, blob: Path, diff_id: str, chain_id: str, parents: list[str], progress: Callable[[int], None]) -> Layer:
        """Unpacks blob as the layer chain_id on top of parents (bottom first), confined."""
        tmp = self.root / temp_name(".tmp")
        (tmp / "diff").mkdir(parents=True, mode=0o755)
        lowers = [str(self.diff_dir(c)) for c in reversed(parents)]
        job: unpacker.Job | None = None
        try:
            job = await unpacker.SHARED.start(str(blob), str(tmp / "diff"), lowers)
            result = await job.result(progress)
            if result.get("diff_id") != diff_id:
                raise DigestMismatch(f"layer {chain_id}: uncompressed content hashes to {result.get('diff_id')}, "
                                     f"the image config says {diff_id}; refused")
            layer = Layer(chain_id, diff_id, parents[-1] if parents else "", int(result["bytes"]), int(result["inodes"]))
            atomic.write_json(tmp / "layer.json", layer.to_dict(), durable=False)  # sync() makes it durable
            target = self.root / layer.key
            try:
                tmp.rename(target)
            except OSError:
                if not (target / "layer.json").exists():
                    raise
                await asyncio.to_thread(shutil.rmtree, tmp, True)  # another process unpacked it first
                layer = Layer.from_dict(atomic.read_json(target / "layer.json"))
            self._applied += 1
            self.layers[chain_id] = layer
            return layer
        except BaseException:
            # Shielded: a second cancellation must not leave the helper or its directory behind.
            await asyncio.shield(self._discard(job, tmp))
            raise

    async def sync(self) -> None:
        """Makes every layer this process applied so far durable (see the module's docstring);
        nothing to do when none was applied since the last sync, as in a re-pull."""
        applied = self._applied
        if self._synced < applied:
            await asyncio.to_thread(syncfs, str(self.root))
            self._synced = max(self._synced, applied)

    def expect(self) -> None:
        """Says that layers are about to be applied (a pull found some missing): the helper starts
        while they download."""
        unpacker.SHARED.prestart()

    def close(self) -> None:
        """Ends the layer helper (at shutdown; the next apply would start it again)."""
        unpacker.SHARED.close()

    @staticmethod
    async def _discard(job: unpacker.Job | None, tmp: Path) -> None:
        if job is not None:
            await job.stop()
        await asyncio.to_thread(shutil.rmtree, tmp, True)

    def remove(self, chain_id: str) -> Path | None:
        """Takes a layer out of the store at once (renamed aside); the caller deletes the returned dir."""
        layer = self.layers.pop(chain_id, None)
        source = self.root / chain_id[7:]
        if layer is None and not source.exists():
            return None
        trash = self.root / temp_name(".gone")
        try:
            source.rename(trash)
        except FileNotFoundError:
            return None
        return trash
