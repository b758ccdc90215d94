"""The layer unpacker against crafted, hostile archives: each rule of cri_shim.image.tarapply."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cri_shim.errors import Internal
from cri_shim.image import unpacker
from cri_shim.image.content import DigestMismatch
from cri_shim.image.layers import LayerStore, chain_ids
from tests.support.images import Layer, tar_layer

pytestmark = pytest.mark.integration


def entry(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


class Stack:
    """Layers applied one on another into a LayerStore in tmp_path/store."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = LayerStore(tmp / "store")
        self.store.open()
        self.diff_ids: list[str] = []

    def apply(self, layer: Layer, diff_id: str | None = None) -> Path:
        blob = self.tmp / "blob"
        blob.write_bytes(layer.blob)
        diff_ids = self.diff_ids + [diff_id or layer.diff_id]
        chains = chain_ids(diff_ids)
        asyncio.run(self.store.apply(blob, diff_ids[-1], chains[-1], chains[:-1], lambda _n: None))
        self.diff_ids = diff_ids
        return self.store.diff_dir(chains[-1])

    def refused(self, layer: Layer, match: str) -> None:
        with pytest.raises((Internal, DigestMismatch), match=match):
            self.apply(layer)
        assert [p.name for p in self.store.root.iterdir()] == [self.store.diff_dir(c).parent.name for c in chain_ids(self.diff_ids)]


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(tmp_path)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the layer that hostile archives aim at."""
    target = tmp_path / "victim"
    target.write_text("untouched")
    return target


def test_dotdot_names_are_refused(stack: Stack, outside: Path) -> None:
    rel = os.path.relpath(outside, stack.store.root / "x" / "diff")
    stack.refused(tar_layer([(entry(rel), b"pwned")]), "climbs out")
    assert outside.read_text() == "untouched"


def test_absolute_names_land_inside_the_layer(stack: Stack, outside: Path) -> None:
    diff = stack.apply(tar_layer([(entry(str(outside)), b"inside")]))
    assert outside.read_text() == "untouched"
    assert (diff / str(outside).lstrip("/")).read_text() == "inside"


@pytest.mark.parametrize("link", ["/", "../../../../../../..", "/../.."])
def test_writes_through_symlinks_stay_in_the_layer(stack: Stack, outside: Path, link: str) -> None:
    members = [(entry("escape", tarfile.SYMTYPE, linkname=link), None),
               (entry(f"escape{outside.parent}/victim"), b"pwned")]
    diff = stack.apply(tar_layer(members))
    assert outside.read_text() == "untouched"
    assert (diff / str(outside).lstrip("/")).read_text() == "pwned"


def test_symlink_chains_stay_in_the_layer(stack: Stack, outside: Path) -> None:
    members = [(entry("a", tarfile.SYMTYPE, linkname="b"), None),
               (entry("b", tarfile.SYMTYPE, linkname="c/../../../../.."), None),
               (entry("c", tarfile.DIRTYPE), None),
               (entry(f"a{outside}"), b"pwned")]
    diff = stack.apply(tar_layer(members))
    assert outside.read_text() == "untouched"
    assert (diff / str(outside).lstrip("/")).read_text() == "pwned"


def test_directory_replaced_by_a_symlink_mid_archive(stack: Stack, outside: Path) -> None:
    members = [(entry("d", tarfile.DIRTYPE), None),
               (entry("d/keep"), b"x"),
               (entry("d", tarfile.SYMTYPE, linkname=".."), None),
               (entry(f"d{outside}"), b"pwned")]
    diff = stack.apply(tar_layer(members))
    assert outside.read_text() == "untouched"
    assert (diff / "d").is_symlink()
    assert (diff / str(outside).lstrip("/")).read_text() == "pwned"


def test_hardlinks_out_of_the_layer_are_refused(stack: Stack, outside: Path) -> None:
    links_before = os.stat(outside).st_nlink
    stack.refused(tar_layer([(entry("l", tarfile.LNKTYPE, linkname="../../../../../../" + str(outside)), None)]), "climbs out")
    stack.refused(tar_layer([(entry("l", tarfile.LNKTYPE, linkname=str(outside)), None)]), "neither in this layer")
    assert os.stat(outside).st_nlink == links_before


def test_hardlink_to_a_symlink_links_the_symlink_itself(stack: Stack, outside: Path) -> None:
    members = [(entry("s", tarfile.SYMTYPE, linkname=str(outside)), None),
               (entry("h", tarfile.LNKTYPE, linkname="s"), None)]
    diff = stack.apply(tar_layer(members))
    assert (diff / "h").is_symlink() and os.readlink(diff / "h") == str(outside)
    assert os.lstat(diff / "h").st_ino == os.lstat(diff / "s").st_ino
    assert os.stat(outside).st_nlink == 1


def test_hardlink_to_a_file_of_a_lower_layer_copies_it_up(stack: Stack) -> None:
    stack.apply(tar_layer([(entry("etc", tarfile.DIRTYPE), None), (entry("etc/data", mode=0o4750, uid=7, gid=8), b"lower")]))
    diff = stack.apply(tar_layer([(entry("link", tarfile.LNKTYPE, linkname="etc/data"), None)]))
    assert (diff / "link").read_bytes() == b"lower"
    st = os.stat(diff / "etc/data")
    assert os.stat(diff / "link").st_ino == st.st_ino and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (7, 8, 0o4750)


def test_whiteouts_and_opaque_directories_become_overlay_ones(stack: Stack) -> None:
    members = [(entry("gone", tarfile.REGTYPE), b"x"), (entry(".wh.gone"), b""),
               (entry("dir", tarfile.DIRTYPE), None), (entry("dir/.wh..wh..opq"), b""),
               (entry("dir/kept"), b"k"), (entry(".wh.from-below"), b"")]
    diff = stack.apply(tar_layer(members))
    for name in ("gone", "from-below"):
        st = os.lstat(diff / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(diff / "dir", "trusted.overlay.opaque") == b"y"
    assert (diff / "dir/kept").read_text() == "k"
    assert not any(p.name.startswith(".wh.") for p in diff.rglob("*"))


def test_bad_whiteout_names_are_refused(stack: Stack) -> None:
    stack.refused(tar_layer([(entry("dir", tarfile.DIRTYPE), None), (entry("dir/.wh.."), b"")]), "invalid whiteout")


def test_modes_owners_xattrs_devices_and_times_are_kept(stack: Stack) -> None:
    xattrs = {"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.trusted.overlay.redirect": "/etc"}
    members = [(entry("bin", tarfile.DIRTYPE, mode=0o711, uid=3, gid=4, mtime=1_000_000), None),
               (entry("bin/su", mode=0o4755, uid=0, gid=0), b"suid"),
               (entry("bin/wall", mode=0o2755, uid=0, gid=5), b"sgid"),
               (entry("owned", mode=0o600, uid=1234, gid=5678, mtime=1_500_000, pax_headers=xattrs), b"o"),
               (entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
               (entry("loop", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660), None),
               (entry("pipe", tarfile.FIFOTYPE, mode=0o644), None)]
    diff = stack.apply(tar_layer(members))
    assert stat.S_IMODE(os.stat(diff / "bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(diff / "bin/wall").st_mode) == 0o2755
    st = os.stat(diff / "owned")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (1234, 5678, 0o600, 1_500_000)
    assert os.getxattr(diff / "owned", "user.note") == b"hello"
    assert "trusted.overlay.redirect" not in os.listxattr(diff / "owned")
    d = os.stat(diff / "bin")
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode), int(d.st_mtime)) == (3, 4, 0o711, 1_000_000)
    assert stat.S_ISCHR(os.lstat(diff / "null").st_mode) and os.lstat(diff / "null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(os.lstat(diff / "loop").st_mode) and os.lstat(diff / "loop").st_rdev == os.makedev(7, 0)
    assert stat.S_ISFIFO(os.lstat(diff / "pipe").st_mode)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_every_compression_is_applied(stack: Stack, compression: str) -> None:
    diff = stack.apply(tar_layer([(entry("f"), b"data" * 1000)], compression))
    assert (diff / "f").read_bytes() == b"data" * 1000


def test_content_not_matching_the_diff_id_is_refused(stack: Stack) -> None:
    layer = tar_layer([(entry("f"), b"data")])
    with pytest.raises(DigestMismatch, match="uncompressed content hashes to"):
        stack.apply(layer, diff_id="sha256:" + "1" * 64)
    assert list(stack.store.root.iterdir()) == []


def test_garbage_is_refused(stack: Stack) -> None:
    stack.refused(Layer(b"", b"\x1f\x8b" + os.urandom(100), "x"), "refused")


def helpers() -> list[int]:
    """This process's layer helper servers (children running cri_shim.image.tarapply)."""
    found = []
    for task in Path("/proc/self/task").iterdir():
        try:  # a thread (an idle timer) or a child may end while we look
            pids = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for pid in pids:
            try:
                if b"cri_shim.image.tarapply" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except FileNotFoundError:
                pass
    return found


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


async def stalled_apply(stack: Stack, fifo: Path) -> tuple[asyncio.Future[object], int]:
    """An apply whose helper child is blocked reading its blob (a FIFO nobody writes): the
    task, and the FIFO's write end, which opens only once the child has it open for reading."""
    digest = "sha256:" + "0" * 64
    task = asyncio.ensure_future(stack.store.apply(fifo, digest, digest, [], lambda _n: None))
    deadline = time.monotonic() + 20
    while True:
        try:
            return task, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            assert exc.errno == errno.ENXIO and time.monotonic() < deadline, exc
            await asyncio.sleep(0.01)


def assert_no_reader(fd: int) -> None:
    """The helper child that had the FIFO open is gone: nobody reads it any more."""
    try:
        with pytest.raises(BrokenPipeError):
            os.write(fd, b"x")
    finally:
        os.close(fd)


def test_a_cancelled_apply_kills_its_helper_and_leaves_nothing(stack: Stack, tmp_path: Path) -> None:
    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)

    async def cancelled() -> int:
        task, fd = await stalled_apply(stack, fifo)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return fd

    assert_no_reader(asyncio.run(cancelled()))
    assert list(stack.store.root.iterdir()) == []


def test_helpers_end_with_their_server(stack: Stack, tmp_path: Path) -> None:
    """What a daemon that dies looks like to the server (its control socket ends): the layer it
    was applying is not finished by an orphan, and the next layer gets a new server."""
    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)

    async def server_ended() -> int:
        task, fd = await stalled_apply(stack, fifo)
        unpacker.SHARED.close()
        with pytest.raises(Internal, match="ended without a result"):
            await task
        return fd

    assert_no_reader(asyncio.run(server_ended()))
    assert helpers() == []
    assert (stack.apply(tar_layer([(entry("f"), b"again")])) / "f").read_bytes() == b"again"


def test_one_server_applies_a_run_of_layers_and_ends_once_idle(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpacker, "IDLE_SECONDS", 0.5)
    stack.apply(tar_layer([(entry("a"), b"a")]))
    first = helpers()
    assert len(first) == 1
    stack.apply(tar_layer([(entry("b"), b"b")]))
    assert helpers() == first
    until(lambda: helpers() == [], "the idle server did not end")
    diff = stack.apply(tar_layer([(entry("c"), b"c")]))
    assert (diff / "c").read_bytes() == b"c" and len(helpers()) == 1
    until(lambda: helpers() == [], "the idle server did not end")
    stack.store.expect()  # started ahead of layers that then never come (a pull failing first)
    assert len(helpers()) == 1
    until(lambda: helpers() == [], "a server started ahead of layers that never came did not end")
