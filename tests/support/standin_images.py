"""Busybox-based stand-ins for the images critest v1.36 pulls, pushed under critest's names.

critest pulls from registry.k8s.io, gcr.io and k8s.gcr.io; there is no internet here, so each
image is rebuilt from Debian's busybox with the property the specs look at (a user, a web server
on a port, several tags of one image, one image in two registries) and pushed to a local
registry. The daemon is configured with that registry as the mirror of every upstream host, so
the tests name images exactly as critest does:

    with Registry() as reg:
        published = publish_standin_images(reg, workdir)
        published.digest_ref   # gcr.io/k8s-staging-cri-tools/test-image-digest@<our digest>
        mirrors(reg)           # {"registry.k8s.io": ["http://127.0.0.1:PORT"], ...}

Digests are content hashes, so the one name critest pins by digest gets the digest of our build.
No generated API code here: the conformance tier imports this module.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tests.support.busybox import DEFAULT_GROUPS, DEFAULT_USERS, PATH_BUSYBOX, make_rootfs
from tests.support.images import Image, Layer, Pusher, build_image, dir_layer
from tests.support.registry import Registry

UPSTREAM_HOSTS = ("registry.k8s.io", "k8s.gcr.io", "gcr.io", "docker.io")
E2E = "registry.k8s.io/e2e-test-images/"
CRI_TOOLS = "gcr.io/k8s-staging-cri-tools/"

BUSYBOX = E2E + "busybox:1.29-2"
NGINX = E2E + "nginx:1.14-2"
HTTPD = E2E + "httpd:2.4.39-4"
NONEWPRIVS = E2E + "nonewprivs:1.3"
HOSTNET_NGINX = CRI_TOOLS + "hostnet-nginx-amd64"
HOSTNET_NGINX_PORT = 12003
IMAGE_WITHOUT_TAG = CRI_TOOLS + "test-image-latest"
IMAGE_WITH_TAG = CRI_TOOLS + "test-image-tag:test"
IMAGE_WITH_ALL_REFERENCES = CRI_TOOLS + "test-image-tag:all"
IMAGE_DIGEST_REPO = CRI_TOOLS + "test-image-digest"
DIFFERENT_IMAGES = [CRI_TOOLS + f"test-image-{n}:latest" for n in (1, 2, 3)]
SAME_IMAGE_TAGS = [CRI_TOOLS + f"test-image-tags:{n}" for n in (1, 2, 3)]
SAME_IMAGE_REGISTRIES = ["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"]
USER_IMAGES = {  # name -> (image User, expected uid, expected username), as critest's consts
    CRI_TOOLS + "test-image-user-uid": ("1002", 1002, ""),
    CRI_TOOLS + "test-image-user-username": ("www-data", 0, "www-data"),
    CRI_TOOLS + "test-image-user-uid-group": ("1003:1004", 1003, ""),
    CRI_TOOLS + "test-image-user-username-group": ("www-data:1004", 0, "www-data"),
}
PREDEFINED_GROUP = CRI_TOOLS + "test-image-predefined-group"
PREDEFINED_UID, PREDEFINED_GID = 1000, 50000

# busybox has no pgrep or ipcs applet; critest's specs run `pgrep sleep` and `ipcs -m`.
PGREP = '#!/bin/sh\nfor d in /proc/[0-9]*; do [ "$(cat "$d/comm" 2>/dev/null)" = "$1" ] && echo "${d#/proc/}"; done\ntrue\n'
IPCS = "#!/bin/sh\ncat /proc/sysvipc/shm\n"
# The nginx stand-in: a script named nginx (so `pidof nginx` finds it and "master process" is in
# its command line), writing /var/run/nginx.pid as nginx does, serving /www with busybox httpd.
NGINX_SCRIPT = """#!/bin/sh
echo $$ > /var/run/nginx.pid
echo "httpd stand-in serving /www on port ${2:-80}"
httpd -f -p "${2:-80}" -h /www &
trap 'kill $!; exit 0' TERM INT
wait
"""
PATH_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def _web_server(port: int) -> dict[str, object]:
    """The nginx stand-in serving its index page on port, as the nginx/httpd test images do."""
    return {"Cmd": ["/usr/sbin/nginx", "master process", str(port)], "Env": PATH_ENV, "ExposedPorts": {f"{port}/tcp": {}}}


def _rootfs(workdir: Path, name: str, users: list[tuple[str, int, int, str]] | None = None,
            groups: list[tuple[str, int, list[str]]] | None = None) -> list[Layer]:
    """One layer: the busybox rootfs plus a pgrep script and a web root."""
    root = make_rootfs(workdir / name, users=users, groups=groups, busybox=PATH_BUSYBOX)
    extra = {"bin/pgrep": (PGREP, 0o755), "bin/ipcs": (IPCS, 0o755), "usr/sbin/nginx": (NGINX_SCRIPT, 0o755),
             "var/run/.keep": ("", 0o644), "www/index.html": ("<html><body>cri-shim test page</body></html>\n", 0o644)}
    for rel, (text, mode) in extra.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()  # an applet is a hardlink of busybox: writing through it would change busybox
        path.write_text(text)
        os.chmod(path, mode)
    return [dir_layer(root)]


@dataclass
class Published:
    """What was pushed: image IDs by critest name, and the digest reference of the digest-only image."""

    ids: dict[str, str]
    digest_ref: str
    all_references_digest: str

    def has(self, name: str) -> bool:
        return name in self.ids


def mirrors(registry: Registry) -> dict[str, list[str]]:
    """The daemon's [images] mirrors: every upstream host critest names served by registry."""
    return {host: [registry.url] for host in UPSTREAM_HOSTS}


def _repo_tag(name: str) -> tuple[str, str]:
    """('k8s-staging-cri-tools/test-image-tag', 'test') from a critest name (host dropped, tag defaulted)."""
    path = name.split("/", 1)[1]
    repo, _, tag = path.rpartition(":") if ":" in path else (path, "", "latest")
    return repo, tag


def publish_standin_images(registry: Registry, workdir: Path, nonewprivs_helper: Path | None = None) -> Published:
    """Builds every stand-in image once and pushes it under all of critest's names.

    nonewprivs_helper is a static binary printing its effective uid (installed setuid root).
    """
    pusher = Pusher(registry.url)
    base = _rootfs(workdir, "base")
    shell = {"Cmd": ["sh"], "Env": PATH_ENV}
    ids: dict[str, str] = {}

    def push(name: str, image: Image) -> str:
        repo, tag = _repo_tag(name)
        digest = pusher.push(image, repo, tag)
        ids[name] = image.id
        return digest

    busybox = build_image(base, shell)
    push(BUSYBOX, busybox)
    push(IMAGE_WITH_TAG, build_image(base, {**shell, "Labels": {"critest": "tag"}}))
    push(IMAGE_WITHOUT_TAG, build_image(base, {**shell, "Labels": {"critest": "latest"}}))
    for name in SAME_IMAGE_TAGS:
        push(name, build_image(base, {**shell, "Labels": {"critest": "tags"}}))
    for n, name in enumerate(DIFFERENT_IMAGES, 1):
        push(name, build_image(base, {**shell, "Labels": {"critest": f"image-{n}"}}))
    pause = build_image(base, {"Entrypoint": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"], "Env": PATH_ENV})
    for name in SAME_IMAGE_REGISTRIES:
        push(name, pause)
    web = build_image(base, _web_server(80))
    push(NGINX, web)
    push(HTTPD, web)
    push(HOSTNET_NGINX, build_image(base, _web_server(HOSTNET_NGINX_PORT)))
    all_refs = build_image(base, {**shell, "Labels": {"critest": "all"}})
    all_references_digest = push(IMAGE_WITH_ALL_REFERENCES, all_refs)
    digest_only = build_image(base, {**shell, "Labels": {"critest": "digest"}})
    repo, _ = _repo_tag(IMAGE_DIGEST_REPO)
    digest = pusher.push(digest_only, repo)
    digest_ref = f"{IMAGE_DIGEST_REPO}@{digest}"
    ids[digest_ref] = digest_only.id
    for name, (user, _, _) in USER_IMAGES.items():
        push(name, build_image(base, {**shell, "User": user}))
    users = [*DEFAULT_USERS, ("testuser", PREDEFINED_UID, PREDEFINED_UID, "/home/testuser")]
    groups = [*DEFAULT_GROUPS, ("testuser", PREDEFINED_UID, []), ("predefined", PREDEFINED_GID, ["testuser"])]
    grouped = _rootfs(workdir, "grouped", users=users, groups=groups)
    push(PREDEFINED_GROUP, build_image(grouped, {**shell, "User": str(PREDEFINED_UID)}))
    if nonewprivs_helper is not None:
        helper = nonewprivs_helper.read_bytes()
        root = make_rootfs(workdir / "nonewprivs")
        target = root / "usr/local/bin/nnp"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(helper)
        os.chmod(target, 0o755 | stat.S_ISUID)
        push(NONEWPRIVS, build_image([dir_layer(root)], {"Entrypoint": ["/usr/local/bin/nnp"], "Env": PATH_ENV}))
    return Published(ids, digest_ref, all_references_digest)
