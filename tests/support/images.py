"""Builds OCI images from the busybox root filesystem and pushes them with the registry API.

    layers = busybox_layers(workdir, count=3)          # the rootfs split into 3 layers
    image = build_image(layers, {"User": "1002", "Cmd": ["sh"]})
    Pusher(registry.url).push(image, "busybox", "latest")   # -> manifest digest
    image.id                                            # sha256 of the config: the image ID

Also crafted layers (tar_layer from explicit members) for the unpacker's hostile-input tests,
multi-arch indexes, and the two tarball formats `cri-shim images import` reads. Plain Python:
usable from benchmark scripts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from cri_shim.image.auth import parse_challenge
from tests.support.busybox import make_rootfs
from tests.support.daemon import Daemon

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip", "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "none": "application/vnd.oci.image.layer.v1.tar"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layer:
    tar: bytes  # uncompressed
    blob: bytes  # as pushed
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.blob)

    @property
    def diff_id(self) -> str:
        return sha256(self.tar)


def compress(tar: bytes, compression: str = "gzip") -> Layer:
    if compression == "gzip":
        blob = gzip.compress(tar, compresslevel=1, mtime=0)
    elif compression == "zstd":
        blob = zstandard.ZstdCompressor(level=1).compress(tar)
    else:
        blob = tar
    return Layer(tar, blob, LAYER_TYPES[compression])


def tar_layer(members: list[tuple[tarfile.TarInfo, bytes | None]], compression: str = "gzip") -> Layer:
    """A layer made of exactly these members, in this order (for crafted, hostile layers)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return compress(buf.getvalue(), compression)


def dir_layer(root: Path, paths: list[Path] | None = None, compression: str = "gzip") -> Layer:
    """A layer of a directory tree (or of the given paths below root, with their parents)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(paths if paths is not None else root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return compress(buf.getvalue(), compression)


def busybox_layers(workdir: Path, count: int = 1, users: list[tuple[str, int, int, str]] | None = None,
                   compression: str = "gzip") -> list[Layer]:
    """The busybox rootfs as count layers: the busybox binary, then /etc, then the rest."""
    root = make_rootfs(workdir / "rootfs", users=users)
    everything = sorted(root.rglob("*"))
    if count == 1:
        return [dir_layer(root, everything, compression)]
    groups: list[list[Path]] = [[] for _ in range(count)]
    for path in everything:
        rel = path.relative_to(root).parts
        index = 0 if rel[0] == "bin" else 1 if rel[0] == "etc" else 2
        groups[min(index, count - 1)].append(path)
    return [dir_layer(root, group, compression) for group in groups]


@dataclass
class Image:
    config: bytes
    manifest: bytes
    layers: list[Layer]
    platform: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return sha256(self.config)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": OCI_MANIFEST, "digest": self.digest, "size": len(self.manifest), "platform": self.platform}


def build_image(layers: list[Layer], config: dict[str, Any] | None = None, arch: str = "amd64", created: str = "2024-01-01T00:00:00Z") -> Image:
    """An OCI image of these layers with the given container config (User, Cmd, Env, ...)."""
    doc = {"created": created, "architecture": arch, "os": "linux", "config": config or {},
           "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}}
    config_bytes = json.dumps(doc, sort_keys=True).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(config_bytes), "size": len(config_bytes)},
                "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": len(layer.blob)} for layer in layers]}
    return Image(config_bytes, json.dumps(manifest, sort_keys=True).encode(), layers, {"os": "linux", "architecture": arch})


def build_index(images: list[Image]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [i.descriptor() for i in images]}).encode()


class Pusher:
    """Pushes blobs and manifests with the registry API v2 (monolithic uploads), handling auth."""

    def __init__(self, url: str, username: str = "", password: str = "") -> None:
        self.url = url.rstrip("/")
        self.basic = "Basic " + __import__("base64").b64encode(f"{username}:{password}".encode()).decode() if username else ""
        self.authorization = ""

    def _call(self, method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
        for _ in range(2):
            req = urllib.request.Request(url, data=data, method=method, headers={**(headers or {})})
            if self.authorization:
                req.add_header("Authorization", self.authorization)
            try:
                return urllib.request.urlopen(req, timeout=60)
            except urllib.error.HTTPError as exc:
                if exc.code != 401 or self.authorization.startswith("Bearer") and _ > 0:
                    raise
                self._authorize(exc.headers.get("WWW-Authenticate", ""))
        raise RuntimeError(f"{method} {url}: unauthorized")

    def _authorize(self, header: str) -> None:
        challenge = parse_challenge(header)
        if challenge is None or challenge.scheme == "basic":
            self.authorization = self.basic
            return
        query = urllib.parse.urlencode({k: v for k, v in challenge.params.items() if k in ("service", "scope")})
        req = urllib.request.Request(f"{challenge.params['realm']}?{query}", headers={"Authorization": self.basic} if self.basic else {})
        self.authorization = "Bearer " + json.loads(urllib.request.urlopen(req, timeout=30).read())["token"]

    def blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        try:
            self._call("HEAD", f"{self.url}/v2/{repo}/blobs/{digest}").close()
            return digest
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        start = self._call("POST", f"{self.url}/v2/{repo}/blobs/uploads/", b"")
        location = urllib.parse.urljoin(self.url + "/", start.headers["Location"])
        start.close()
        sep = "&" if "?" in location else "?"
        self._call("PUT", f"{location}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"}).close()
        return digest

    def manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        self._call("PUT", f"{self.url}/v2/{repo}/manifests/{reference}", body, {"Content-Type": media_type}).close()
        return sha256(body)

    def push(self, image: Image, repo: str, tag: str | None = None) -> str:
        """Pushes layers, config and manifest (tagged, or by digest only); returns the manifest digest."""
        for layer in image.layers:
            self.blob(repo, layer.blob)
        self.blob(repo, image.config)
        return self.manifest(repo, tag or image.digest, image.manifest, OCI_MANIFEST)

    def push_index(self, images: list[Image], repo: str, tag: str) -> str:
        for image in images:
            self.push(image, repo)
        return self.manifest(repo, tag, build_index(images), OCI_INDEX)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def oci_archive(path: Path, image: Image, name: str) -> Path:
    """An OCI image layout tarball holding image, annotated with its full name."""
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        index = {"schemaVersion": 2, "manifests": [{**image.descriptor(), "annotations": {
            "io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]}
        _add(tar, "index.json", json.dumps(index).encode())
        for blob in [image.manifest, image.config, *[layer.blob for layer in image.layers]]:
            _add(tar, f"blobs/sha256/{sha256(blob)[7:]}", blob)
    return path


def docker_archive(path: Path, image: Image, repo_tags: list[str]) -> Path:
    """A `docker save` tarball: manifest.json, <config hex>.json, <n>/layer.tar (uncompressed)."""
    with tarfile.open(path, "w") as tar:
        layer_names = []
        for n, layer in enumerate(image.layers):
            layer_names.append(f"{n:02d}/layer.tar")
            _add(tar, layer_names[-1], layer.tar)
        config_name = f"{image.id[7:]}.json"
        _add(tar, config_name, image.config)
        _add(tar, "manifest.json", json.dumps([{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}]).encode())
    return path


USER_IMAGES = {"user-uid": "1002", "user-username": "www-data", "user-uid-group": "1003:1004", "user-username-group": "www-data:1004"}


@dataclass
class Catalog:
    """The test images pushed to one registry, by role (all under host/<repo>)."""

    host: str
    busybox: Image  # busybox:latest, one layer
    layered: Image  # layered:latest, three layers
    users: dict[str, Image]  # repo -> image with that User (see USER_IMAGES)
    tagged: Image  # tags:1, tags:2, tags:3
    different: list[Image]  # image-1, image-2, image-3 (latest)
    index_images: list[Image]  # multiarch:latest, an index of amd64 and arm64
    index_digest: str
    by_digest: Image  # digest-only, pushed without a tag

    def ref(self, repo: str, tag: str = "latest") -> str:
        return f"{self.host}/{repo}:{tag}"


def publish_test_images(pusher: Pusher, host: str, workdir: Path) -> Catalog:
    """Builds and pushes every test image; the busybox layer is built once and shared."""
    base = busybox_layers(workdir / "one", 1)
    cmd = {"Cmd": ["sh"], "Env": ["PATH=/bin:/usr/bin"]}
    busybox = build_image(base, cmd)
    pusher.push(busybox, "busybox", "latest")
    layered = build_image(busybox_layers(workdir / "three", 3), {**cmd, "Entrypoint": ["/bin/sh", "-c"], "WorkingDir": "/root",
                                                                   "StopSignal": "SIGINT", "Volumes": {"/data": {}}})
    pusher.push(layered, "layered", "latest")
    users = {}
    for repo, user in USER_IMAGES.items():
        users[repo] = build_image(base, {**cmd, "User": user})
        pusher.push(users[repo], repo, "latest")
    tagged = build_image(base, {**cmd, "Labels": {"role": "tags"}})
    for tag in ("1", "2", "3"):
        pusher.push(tagged, "tags", tag)
    different = [build_image(base, {**cmd, "Env": [f"IMAGE={n}"]}) for n in (1, 2, 3)]
    for n, image in enumerate(different, 1):
        pusher.push(image, f"image-{n}", "latest")
    index_images = [build_image(base, cmd, arch="amd64"), build_image(base, {**cmd, "Labels": {"arch": "arm64"}}, arch="arm64")]
    index_images[1].platform["variant"] = "v8"
    index_digest = pusher.push_index(index_images, "multiarch", "latest")
    by_digest = build_image(base, {**cmd, "Labels": {"role": "digest"}})
    pusher.push(by_digest, "digest-only")
    return Catalog(host, busybox, layered, users, tagged, different, index_images, index_digest, by_digest)


def store_leftovers(daemon: Daemon) -> list[str]:
    """Everything of image data in the daemon's store: records, layers, blobs, partial work."""
    root = daemon.dir / "state" / "images"
    found = []
    for sub in ("records", "layers", "blobs/sha256", "ingest"):
        d = root / sub
        found += [f"{sub}/{p.name}" for p in d.iterdir()] if d.exists() else []
    return found
