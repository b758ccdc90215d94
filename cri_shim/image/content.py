"""The content store: blobs (manifests, configs, layer archives) by digest, never unverified.

A blob is written to ingest/ while its sha256 is computed and is renamed into
blobs/sha256/<hex> only when digest and size match what the manifest promised, so nothing
under blobs/ was ever used unverified, and a pull that dies leaves only ingest files, which
are removed at start.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from cri_shim.errors import Internal, InvalidArgument
from cri_shim.image.reference import is_digest
from cri_shim.store import atomic


class DigestMismatch(Internal):
    """A blob's bytes do not hash to the digest that named it: tampered or corrupt, refused."""


def temp_name(prefix: str) -> str:
    """A unique name for work in progress, carrying our pid so that cleanup spares live owners."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def owner_alive(name: str) -> bool:
    """True while the process that made the temp_name() name still runs (called at open, when
    nothing of ours exists yet, so our own pid there is a reused one from before)."""
    try:
        pid = int(name.split("-")[1])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Ingest:
    """A blob being written: hashed as it is written, committed only when it verifies. An empty
    digest means the content is verified by other means (a layer's diff_id) and is not committed."""

    def __init__(self, store: ContentStore, digest: str, size: int | None, what: str) -> None:
        self.store = store
        self.digest = digest
        self.expected_size = size
        self.what = what
        self.path = store.ingest_dir / temp_name(digest[7:19] or "layer")
        self.hash = hashlib.sha256()
        self.written = 0
        self._file = open(self.path, "wb")

    def write(self, chunk: bytes) -> None:
        if self.expected_size is not None and self.written + len(chunk) > self.expected_size:
            raise DigestMismatch(f"{self.what}: more than the {self.expected_size} bytes the manifest declares")
        self.hash.update(chunk)
        self._file.write(chunk)
        self.written += len(chunk)

    def verify(self) -> Path:
        """Checks size and digest; on mismatch discards the data. Returns the (ingest) file, not
        fsynced: a layer blob is read once by the layer helper and removed (a crash loses it with
        the pull), so only commit() makes what stays durable."""
        self._file.close()
        got = "sha256:" + self.hash.hexdigest()
        try:
            if self.expected_size is not None and self.written != self.expected_size:
                raise DigestMismatch(f"{self.what}: got {self.written} bytes, the manifest declares {self.expected_size}")
            if self.digest and got != self.digest:
                raise DigestMismatch(f"{self.what}: content hashes to {got}, expected {self.digest}; refused")
        except DigestMismatch:
            self.discard()
            raise
        return self.path

    def commit(self) -> Path:
        """Verifies the blob, then moves it into the store, durably."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
        self.verify()
        target = self.store.path(self.digest)
        os.replace(self.path, target)
        atomic.fsync_dir(target.parent)
        return target

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class ContentStore:
    """Verified blobs under root/blobs/sha256, partial downloads under root/ingest."""

    def __init__(self, root: Path) -> None:
        self.blob_dir = root / "blobs" / "sha256"
        self.ingest_dir = root / "ingest"
        self.sizes: dict[str, int] = {}  # every stored blob's size: disk usage without a walk

    def open(self) -> None:
        """Creates the directories and drops partial downloads a previous run left behind."""
        self.blob_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ingest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in self.ingest_dir.iterdir():
            if not owner_alive(path.name):
                path.unlink(missing_ok=True)
        self.reload()

    def reload(self) -> None:
        """Reads the sizes of the stored blobs (another process may have added some)."""
        self.sizes = {"sha256:" + p.name: p.stat().st_size for p in self.blob_dir.iterdir() if len(p.name) == 64}

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise InvalidArgument(f"unsupported digest {digest!r}: only sha256 is accepted")
        return self.blob_dir / digest[7:]

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def ingest(self, digest: str, size: int | None, what: str) -> Ingest:
        return Ingest(self, digest, size, what)

    def put(self, digest: str, data: bytes, what: str) -> Path:
        """Stores a small blob held in memory (manifest, config) after verifying it."""
        ingest = self.ingest(digest, len(data), what)
        try:
            ingest.write(data)
        except BaseException:
            ingest.discard()
            raise
        path = ingest.commit()
        self.sizes[digest] = len(data)
        return path

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
        self.sizes.pop(digest, None)

    def digests(self) -> list[str]:
        return list(self.sizes)
