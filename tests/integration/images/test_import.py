"""`cri-shim images import`: OCI layout and docker-archive tarballs, with and without a daemon."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.images.conftest import spec, status
from tests.support.client import Cri, api
from tests.support.daemon import Daemon
from tests.support.images import Catalog, build_image, docker_archive, oci_archive

pytestmark = pytest.mark.integration


def run_import(daemon: Daemon, archive: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cri_shim", "images", "import", str(archive), "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=120)


def test_import_both_formats_into_a_stopped_then_a_running_daemon(tmp_path: Path, catalog: Catalog) -> None:
    oci_image = catalog.layered
    docker_image = build_image(catalog.busybox.layers, {"Cmd": ["sh"], "Env": ["FROM=docker-archive"]})
    d = Daemon()
    try:
        # Daemon not running: the CLI works on the store directly.
        done = run_import(d, oci_archive(tmp_path / "oci.tar", oci_image, "example.com/app/layered:v1"))
        assert done.returncode == 0, done.stderr
        assert f"imported {oci_image.id} example.com/app/layered:v1" in done.stdout
        d.start()
        client = Cri(d.endpoint)
        image = status(client, "example.com/app/layered:v1").image
        assert image.id == oci_image.id
        assert list(image.repo_digests) == [f"example.com/app/layered@{oci_image.digest}"]
        # Daemon running: it sees the import at its next call.
        done = run_import(d, docker_archive(tmp_path / "docker.tar", docker_image, ["busybox:imported"]))
        assert done.returncode == 0, done.stderr
        image = status(client, "docker.io/library/busybox:imported").image
        assert image.id == docker_image.id and list(image.repo_tags) == ["docker.io/library/busybox:imported"]
        assert len(client.image.ListImages(api.ListImagesRequest()).images) == 2
        client.image.RemoveImage(api.RemoveImageRequest(image=spec("busybox:imported")))
        assert not status(client, docker_image.id).HasField("image")
        client.close()
    finally:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


def test_import_refuses_a_tampered_archive_and_keeps_nothing(tmp_path: Path, catalog: Catalog) -> None:
    image = build_image(catalog.busybox.layers, {"Env": ["T=1"]})
    good = docker_archive(tmp_path / "good.tar", image, ["example.com/t:1"])
    data = bytearray(good.read_bytes())
    marker = data.find(b"BusyBox v")  # inside the busybox binary, in the layer's tar stream
    data[marker] ^= 0xFF
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    d = Daemon()
    try:
        done = run_import(d, bad)
        assert done.returncode == 1 and "hashes to" in done.stderr
        store = d.dir / "state" / "images"
        assert list((store / "records").iterdir()) == [] and list((store / "layers").iterdir()) == []
        not_tar = tmp_path / "junk.tar"
        not_tar.write_bytes(b"junk")
        done = run_import(d, not_tar)
        assert done.returncode == 1 and "not a readable tar archive" in done.stderr
    finally:
        shutil.rmtree(d.dir, ignore_errors=True)
