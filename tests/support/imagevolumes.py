"""An image made to be mounted as an image volume (Mount.image), with known files and hostile links.

Two layers, so that the volume is an overlay of several: the first holds /data (files, a sub
directory, a file that the second layer whites out, and symlinks that point up and out of the
image, absolutely and relatively, or nowhere) and an /etc with one marker file; the second adds
a file and the whiteout.

    ref = push_volume_image(registry)
    mount = image_mount("/vol", ref, sub_path="data/sub")
"""

from __future__ import annotations

import tarfile

from tests.support.client import api
from tests.support.images import Pusher, build_image, tar_layer
from tests.support.registry import Registry

REPO = "volume-content"


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def push_volume_image(registry: Registry) -> str:
    """Builds and pushes the image; its reference."""
    first = tar_layer([
        _dir("etc"), _file("etc/marker", b"image etc\n"),
        _dir("data"), _file("data/hello.txt", b"hello\n"), _file("data/removed.txt", b"gone in layer 2\n"),
        _dir("data/sub"), _file("data/sub/inner.txt", b"inner\n"),
        _link("data/abs", "/etc"),  # absolute: the image's /etc, never the host's
        _link("data/up", "../../../../../.."),  # relative, above the root: the image's root
        _link("data/dangling", "/no/such/dir"),
    ])
    second = tar_layer([_dir("data"), _file("data/layer2.txt", b"second layer\n"), _file("data/.wh.removed.txt", b"")])
    image = build_image([first, second], {"Env": ["PATH=/bin"]})
    Pusher(registry.url).push(image, REPO, "latest")
    return f"{registry.host}/{REPO}:latest"


def image_mount(container_path: str, image: str, sub_path: str = "", readonly: bool = True) -> api.Mount:
    """A CRI mount of an image, as kubelet sends one for an `image` volume."""
    return api.Mount(container_path=container_path, image=api.ImageSpec(image=image), image_sub_path=sub_path, readonly=readonly)
