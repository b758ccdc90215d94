"""PullImage: from a reference to a stored image, over the registry API, verified throughout.

Order of work: resolve the reference on the mirrors, then the registry; pick the platform of
an index; fetch and verify the config; download missing layers (a few at a time) and apply
each onto its parents as soon as both are there; store manifest and config; commit the
record. Nothing is used before its digest matched. Concurrent pulls share work (the same
image, or the same layer of different images); a pull that makes no progress for
images.pull_progress_timeout_seconds fails; a pull every caller gave up on is stopped and
what it had stored is removed again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Mapping
from pathlib import Path

from cri_shim import metrics
from cri_shim.config import ImagesConfig
from cri_shim.errors import CriError, DeadlineExceeded, InvalidArgument
from cri_shim.image import auth, imageconfig, manifest
from cri_shim.image.auth import Credentials
from cri_shim.image.content import DigestMismatch, sha256_digest
from cri_shim.image.flight import SingleFlight
from cri_shim.image.layers import chain_ids
from cri_shim.image.records import ImageRecord
from cri_shim.image.reference import Reference
from cri_shim.image.registry import Client, Endpoint, Registries, Transfer, endpoints
from cri_shim.image.store import ImageStore

log = logging.getLogger("cri_shim.image.pull")

PARALLEL_DOWNLOADS = 3
LOG_EVERY = 5.0


class Progress:
    """When the pull last moved (bytes received or layer data applied), and how much it moved."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.bytes = 0
        self.layers_done = 0

    def tick(self, n: int = 0) -> None:
        self.bytes += n
        self.last = time.monotonic()


class Puller:
    """Pulls images into the store; one shared pull an image, one shared unpack a layer."""

    def __init__(self, store: ImageStore, cfg: ImagesConfig, environ: Mapping[str, str]) -> None:
        """environ: the daemon's environment, whose HTTPS_PROXY/HTTP_PROXY/NO_PROXY pulls honour."""
        self.store = store
        self.cfg = cfg
        self.registries = Registries(cfg, environ)
        self._pulls: SingleFlight[ImageRecord] = SingleFlight()
        self._layers: SingleFlight[None] = SingleFlight()
        self._downloads = asyncio.Semaphore(PARALLEL_DOWNLOADS)

    async def pull(self, ref: Reference, creds: Credentials) -> ImageRecord:
        key = f"{ref} {hashlib.sha256(repr(creds).encode()).hexdigest()[:16]}"
        return await self._pulls.run(key, functools.partial(self._watched, ref, creds))

    async def _watched(self, ref: Reference, creds: Credentials) -> ImageRecord:
        """Runs the pull under the progress watchdog and logs its progress."""
        started = time.monotonic()
        timeout = self.cfg.pull_progress_timeout_seconds
        progress = Progress()
        transfer = Transfer()
        work = asyncio.ensure_future(self._resolve(ref, creds, progress, transfer))
        reported = 0
        result = "error"
        log.info("pulling image", extra={"image": str(ref)})
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=min(LOG_EVERY, timeout))
                if done:
                    record = work.result()
                    result = "ok"
                    log.info("image pulled", extra={"image": str(ref), "id": record.image_id, "bytes": progress.bytes,
                                                    "seconds": round(time.monotonic() - started, 3)})
                    return record
                if time.monotonic() - progress.last > timeout:
                    raise DeadlineExceeded(f"pull of {ref} made no progress for {timeout} s (images.pull_progress_timeout_seconds)")
                if progress.bytes != reported:
                    reported = progress.bytes
                    log.info("pull progress", extra={"image": str(ref), "bytes": progress.bytes,
                                                     "layers_done": progress.layers_done,
                                                     "seconds": round(time.monotonic() - started, 1)})
        finally:
            if not work.done():
                transfer.abort()
                work.cancel()
                await asyncio.wait({work})  # wait() does not cancel it again if we are
            metrics.observe_pull(result, progress.bytes, time.monotonic() - started)

    async def _resolve(self, ref: Reference, creds: Credentials, progress: Progress, transfer: Transfer) -> ImageRecord:
        """Finds the manifest on the first endpoint that has it, then pulls from that endpoint."""
        failures: list[tuple[str, CriError]] = []
        timeout = float(self.cfg.pull_progress_timeout_seconds)
        for endpoint in endpoints(self.cfg, ref.domain):
            try:
                ep_creds = await asyncio.to_thread(self._credentials, endpoint, creds)
                client = Client(endpoint, ref.path, ep_creds, timeout, transfer, self.registries)
                body, content_type, claimed = await asyncio.to_thread(client.manifest, ref.object, manifest.ACCEPT)
            except CriError as exc:
                log.info("endpoint failed", extra={"image": str(ref), "endpoint": endpoint.url, "error": str(exc)})
                failures.append((endpoint.url, exc))
                continue
            progress.tick(len(body))
            return await self._from_manifest(ref, client, body, content_type, claimed, progress)
        last = failures[-1][1]
        if len(failures) > 1:
            others = "; ".join(f"{url}: {exc}" for url, exc in failures[:-1])
            raise type(last)(f"{last} (mirrors tried first: {others})")
        raise last

    def _credentials(self, endpoint: Endpoint, creds: Credentials) -> Credentials:
        """What an endpoint is sent: the registry gets the pull's credentials, else those of the
        auth file for it; a mirror those of the auth file for the mirror's own host, or the
        registry's where its host says upstream_credentials (and only there)."""
        if not endpoint.mirror or endpoint.upstream_credentials:
            return creds or auth.from_auth_file(self.cfg.auth_file, endpoint.host)
        return auth.from_auth_file(self.cfg.auth_file, urllib.parse.urlsplit(endpoint.url).netloc)

    async def _from_manifest(self, ref: Reference, client: Client, body: bytes, content_type: str, claimed: str,
                             progress: Progress) -> ImageRecord:
        top = sha256_digest(body)
        what = f"manifest of {ref}"
        if ref.digest and top != ref.digest:
            raise DigestMismatch(f"{what}: content hashes to {top}, the reference asks for {ref.digest}; refused")
        if claimed and claimed != top:
            raise DigestMismatch(f"{what}: content hashes to {top}, the registry claims {claimed}; refused")
        documents = {top: body}
        kind = manifest.media_type_of(body, content_type, what)
        if kind in manifest.INDEX_TYPES:
            chosen = manifest.choose_platform(manifest.parse_index(body, what), what)
            body, content_type, _ = await asyncio.to_thread(client.manifest, chosen.digest, manifest.ACCEPT)
            if sha256_digest(body) != chosen.digest or len(body) != chosen.size:
                raise DigestMismatch(f"{what}: platform manifest does not match {chosen.digest}; refused")
            documents[chosen.digest] = body
            kind = manifest.media_type_of(body, content_type, what)
            if kind not in manifest.MANIFEST_TYPES:
                raise InvalidArgument(f"{what}: index entry {chosen.digest} is not an image manifest ({kind})")
        image = manifest.parse_manifest(body, kind, what)
        config_bytes = self._stored_blob(image.config.digest)
        if config_bytes is None:
            config_bytes = await asyncio.to_thread(self._small_blob, client, image.config, progress)
        config = imageconfig.parse(config_bytes)
        if len(config.diff_ids) != len(image.layers):
            raise InvalidArgument(f"{what}: {len(image.layers)} layers but {len(config.diff_ids)} diff_ids in the config")
        chains = chain_ids(config.diff_ids)
        blobs = {image.config.digest: config_bytes, **documents}
        record = ImageRecord(
            id=image.config.digest[7:],
            repo_tags=[str(ref)] if ref.tag else [],
            repo_digests=[ref.with_digest(top)],
            chain_ids=chains,
            blobs=list(blobs),
            size=image.config.size + sum(layer.size for layer in image.layers),
            created=time.time(),
        )
        return await store_image(self.store, record, blobs, self._layers_in_place(client, image.layers, config.diff_ids, chains, progress))

    def _stored_blob(self, digest: str) -> bytes | None:
        """A blob the content store already holds (verified when it was stored), so that a re-pull
        of an image that is present asks the registry for nothing but the manifest."""
        try:
            return self.store.content.read(digest)
        except FileNotFoundError:
            return None

    def _small_blob(self, client: Client, desc: manifest.Descriptor, progress: Progress) -> bytes:
        if desc.size > 8 * 1024 * 1024:
            raise InvalidArgument(f"config blob {desc.digest} is {desc.size} bytes, more than 8 MiB")
        data = bytearray()

        def sink(chunk: bytes) -> None:
            data.extend(chunk)
            progress.tick(len(chunk))
            if len(data) > desc.size:
                raise DigestMismatch(f"blob {desc.digest}: more than the {desc.size} bytes declared")

        client.blob(desc.digest, sink)
        if sha256_digest(bytes(data)) != desc.digest:
            raise DigestMismatch(f"blob {desc.digest}: content hashes to {sha256_digest(bytes(data))}; refused")
        return bytes(data)

    async def _layers_in_place(self, client: Client, layers: tuple[manifest.Descriptor, ...], diff_ids: list[str],
                               chains: list[str], progress: Progress) -> None:
        tasks: list[asyncio.Future[None]] = []
        previous: asyncio.Future[None] | None = None
        for i, (desc, diff_id, chain) in enumerate(zip(layers, diff_ids, chains)):
            if self.store.layers.has(chain) and not self._layers.running(chain):
                previous = None
                continue
            work = functools.partial(self._layer, client, desc, diff_id, chain, chains[:i], previous, progress)
            previous = asyncio.ensure_future(self._layers.run(chain, work))
            tasks.append(previous)
        if tasks:
            self.store.layers.expect()
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)

    async def _layer(self, client: Client, desc: manifest.Descriptor, diff_id: str, chain: str, parents: list[str],
                     below: asyncio.Future[None] | None, progress: Progress) -> None:
        async with self._downloads:
            blob = await self._download(client, desc, progress)
        try:
            if below is not None:
                await asyncio.shield(below)
            await self.store.layers.apply(blob, diff_id, chain, parents, lambda _n: progress.tick())
            progress.layers_done += 1
        finally:
            blob.unlink(missing_ok=True)

    async def _download(self, client: Client, desc: manifest.Descriptor, progress: Progress) -> Path:
        """The verified layer blob in the ingest directory; the caller removes it once applied."""
        ingest = self.store.content.ingest(desc.digest, desc.size, f"layer blob {desc.digest}")
        transfer = Transfer()

        def run() -> Path:
            def sink(chunk: bytes) -> None:
                ingest.write(chunk)
                progress.tick(len(chunk))

            client.blob(desc.digest, sink, transfer)
            return ingest.verify()

        fetch = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            return await asyncio.shield(fetch)
        except BaseException:
            # The worker thread returns as soon as its socket is shut; the partial file goes then,
            # even if this task is cancelled again meanwhile.
            transfer.abort()
            fetch.add_done_callback(lambda _f: ingest.discard())
            raise


async def store_image(store: ImageStore, record: ImageRecord, blobs: dict[str, bytes],
                      layers_ready: Awaitable[None]) -> ImageRecord:
    """Awaits the layers, puts the blobs in place and commits the record (shared by pull and
    import). If anything fails or is cancelled on the way, what no other image uses is
    removed again, so a failed pull leaves neither layers nor blobs nor a record behind."""
    try:
        with store.hold(record.chain_ids):
            await layers_ready
            for digest, data in blobs.items():
                if not store.content.has(digest):
                    await asyncio.to_thread(store.content.put, digest, data, f"blob {digest}")
            return await store.commit(record)
    except BaseException:
        await asyncio.shield(store.discard_unused(record.chain_ids, list(blobs)))
        raise
