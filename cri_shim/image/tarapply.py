"""The layer helper: applies (hostile) layer archives, each into an empty directory, confined.

It runs as a fork server, `python -m cri_shim.image.tarapply`, started by
cri_shim.image.unpacker with a SOCK_SEQPACKET control socket as its stdin: starting an
interpreter and importing this module costs 80-130 ms, more than applying most layers, so it is
paid once for a run of pulls instead of once a layer. A request (JSON) names a blob, an empty
directory DIR and the lower layer directories (topmost first), and carries the write end of a
report pipe; the server forks one child for it and goes back to listening. The child opens the
blob and the lower layers, then chroots into DIR: from then on no name in the archive, no `..`,
no symlink (planted earlier in the same archive or not) and no hardlink can reach outside DIR,
because for that process nothing else exists. tarfile only parses headers here; every member
is applied by our own code, which keeps what images legitimately carry (setuid bits, owners,
xattrs, device nodes, absolute symlinks) and turns AUFS whiteouts into overlayfs ones.

The child reports on its pipe: `progress <compressed bytes read>` lines, then one JSON line with
the diff_id (sha256 of the uncompressed stream) and the disk usage of the result, or one
`layer refused: <reason>` line; the pipe ends when the child exits. The caller removes DIR.
`{"kill": id}` kills a child. The end of the control socket (the daemon closed it, or died)
ends the server, and the kernel then kills its children (parent-death signal): no helper goes on
writing for a daemon that is gone.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import sys
import tarfile
import traceback
import zlib
from typing import IO, Any, NoReturn

import zstandard

from cri_shim.image.lowers import Lowers
from cri_shim.image.usage import disk_usage
from cri_shim.linux.syscalls import set_parent_death_signal

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
PROGRESS_EVERY = 4 * 1024 * 1024
REASON_LIMIT = 4096
MAX_REQUEST = 1 << 20  # a request names a blob, a directory and at most a few hundred lowers
# Overlayfs' own xattrs in an archive could redirect lookups to other paths: never taken from input.
_REFUSED_XATTR = "trusted.overlay."


class Refused(Exception):
    """The archive asks for something a layer must not do."""


class _Counting:
    """The compressed stream, reporting how far it has been read (pull progress)."""

    def __init__(self, raw: IO[bytes], report: IO[str]) -> None:
        self.raw = raw
        self.report = report
        self.read_bytes = 0
        self._reported = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.read_bytes += len(data)
        if self.read_bytes - self._reported >= PROGRESS_EVERY:
            self._reported = self.read_bytes
            print(f"progress {self.read_bytes}", file=self.report, flush=True)
        return data


class _Hashing:
    """The uncompressed stream, hashed as tarfile reads it: its digest is the layer's diff_id."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.hash.hexdigest()


def decompressed(raw: _Counting) -> Any:
    """A reader of the layer's tar stream: gzip, zstd or plain, told apart by magic bytes."""
    head = raw.raw.peek(4)[:4] if hasattr(raw.raw, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def clean(name: str) -> str:
    """The member's path relative to the layer root; `..` that climbs out is refused."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise Refused(f"{name!r} climbs out of the layer")
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


class Applier:
    """Applies members to the current root (the chroot), tracking directory times for the end."""

    def __init__(self, lowers: Lowers) -> None:
        self.lowers = lowers
        self.dir_times: list[tuple[str, float]] = []

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = clean(member.name)
        if not rel:
            return  # the layer root itself: its attributes come from the container's upper dir
        parent, _, base = rel.rpartition("/")
        if base.startswith(WHITEOUT):
            self._whiteout(parent, base)
            return
        self._ensure_dir(parent)
        path = "/" + rel
        if member.isdir():
            if not _is_dir(path):
                _remove(path)
                os.mkdir(path, 0o700)
            self.dir_times.append((path, member.mtime))
        elif member.islnk():
            self._hardlink(path, member.linkname)
            return
        elif member.isreg():
            _remove(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                source = tar.extractfile(member)
                assert source is not None
                shutil.copyfileobj(source, out, 1 << 20)
        elif member.issym():
            _remove(path)
            os.symlink(member.linkname, path)
        elif member.ischr() or member.isblk():
            _remove(path)
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            _remove(path)
            os.mkfifo(path, 0o600)
        else:
            raise Refused(f"{member.name!r}: unsupported tar entry type {member.type!r}")
        _set_attributes(path, member)

    def _whiteout(self, parent: str, base: str) -> None:
        self._ensure_dir(parent)
        directory = "/" + parent
        if base == OPAQUE:
            os.setxattr(directory, "trusted.overlay.opaque", b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # other AUFS metadata (.wh..wh.plnk): meaningless to overlayfs
        name = base[len(WHITEOUT):]
        if name in ("", ".", ".."):
            raise Refused(f"invalid whiteout {base!r} in {directory!r}")
        path = f"{directory.rstrip('/')}/{name}"
        _remove(path)
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def _hardlink(self, path: str, linkname: str) -> None:
        target = "/" + clean(linkname)
        if target == "/":
            raise Refused(f"hardlink {path!r} names the layer root")
        if target == path:
            return
        if not os.path.lexists(target):
            self._copy_up(target)
        if stat.S_ISDIR(os.lstat(target).st_mode):
            raise Refused(f"hardlink {path!r} to directory {target!r}")
        _remove(path)
        os.link(target, path, follow_symlinks=False)

    def _copy_up(self, target: str) -> None:
        """Brings a hardlink's target up from the lower layers, as an overlay mount would."""
        rel = target.lstrip("/")
        found = self.lowers.find(rel)
        if found is None:
            raise Refused(f"hardlink target {target!r} exists neither in this layer nor below it")
        root, st = found
        self._ensure_dir(rel.rpartition("/")[0])
        if stat.S_ISLNK(st.st_mode):
            os.symlink(self.lowers.readlink(root, rel), target)
        elif stat.S_ISREG(st.st_mode):
            with os.fdopen(self.lowers.open_file(root, rel), "rb") as src, open(target, "xb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                for name in os.listxattr(src.fileno()):
                    if not name.startswith(_REFUSED_XATTR):
                        os.setxattr(out.fileno(), name, os.getxattr(src.fileno(), name))
        else:
            raise Refused(f"hardlink target {target!r} in a lower layer is not a file or symlink")
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(target, stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _ensure_dir(self, rel: str) -> None:
        """Creates missing parents, with the owner and mode a lower layer gives them (else 0755 root).

        A parent that is a symlink is followed, as containerd does, and inside the chroot it
        can only lead somewhere else in this layer."""
        if not rel or os.path.isdir("/" + rel):
            return
        self._ensure_dir(rel.rpartition("/")[0])
        path = "/" + rel
        if os.path.lexists(path):
            raise Refused(f"{path!r} is used as a directory but is not one")
        os.mkdir(path, 0o755)
        found = self.lowers.find(rel)
        if found is not None:
            st = found[1]
            if stat.S_ISDIR(st.st_mode):
                os.chown(path, st.st_uid, st.st_gid)
                os.chmod(path, stat.S_IMODE(st.st_mode))

    def finish(self) -> None:
        """Directory times last: creating entries inside a directory moves its mtime."""
        for path, mtime in reversed(self.dir_times):
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: str) -> None:
    """Removes what this layer already has at path (never following a symlink)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _set_attributes(path: str, member: tarfile.TarInfo) -> None:
    """Owner, then mode (chown clears setuid/setgid), xattrs, then times."""
    os.chown(path, member.uid, member.gid, follow_symlinks=False)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key[len("SCHILY.xattr."):]
            if not name.startswith(_REFUSED_XATTR):
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
    if not member.isdir():
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def _say(report: IO[str], reason: str) -> None:
    """A reason as one bounded report line (an archive's names may hold newlines, and be long)."""
    print(reason.replace("\n", " ")[:REASON_LIMIT], file=report, flush=True)


def apply_layer(blob: str, root: str, lower_dirs: list[str], report: IO[str]) -> int:
    """Applies blob into root, chrooted there (for good: the caller is a child that exits after)."""
    raw = open(blob, "rb")
    lowers = Lowers(lower_dirs)
    os.chroot(root)
    os.chdir("/")
    os.umask(0)
    counting = _Counting(raw, report)
    stream = _Hashing(decompressed(counting))
    applier = Applier(lowers)
    try:
        with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tar:  # type: ignore[call-overload]
            for member in tar:
                applier.apply(tar, member)
        applier.finish()
        diff_id = stream.drain()
    except (Refused, OSError, tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        _say(report, f"layer refused: {exc}")
        return 1
    used, inodes = disk_usage("/")
    print(json.dumps({"diff_id": diff_id, "bytes": used, "inodes": inodes}), file=report, flush=True)
    return 0


def _child(request: dict[str, Any], report_fd: int, server: int) -> NoReturn:
    """One layer, in a forked child of the server; never returns."""
    code = 1
    report = os.fdopen(report_fd, "w")
    try:
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() == server:  # else the server died before the line above took effect
            code = apply_layer(request["blob"], request["dir"], request["lowers"], report)
    except BaseException as exc:  # a bug, not a refusal: say so on the report, the trace on stderr
        traceback.print_exc()
        _say(report, f"layer helper failed: {type(exc).__name__}: {exc}")
    os._exit(code)


def serve(control: socket.socket) -> None:
    """Forks a child for every apply request, kills on request, until the control socket ends."""
    server = os.getpid()
    children: dict[int, int] = {}  # request id -> pid, until reaped (so a kill never hits a reused pid)
    reapers: dict[int, int] = {}  # pidfd -> request id
    while True:
        ready, _, _ = select.select([control.fileno(), *reapers], [], [])
        for fd in ready:
            if fd in reapers:
                job = reapers.pop(fd)
                os.waitpid(children.pop(job), 0)
                os.close(fd)
                continue
            message, fds, _, _ = socket.recv_fds(control, MAX_REQUEST, 1)
            if not message:
                return
            request = json.loads(message)
            if "kill" in request:
                if request["kill"] in children:
                    os.kill(children[request["kill"]], signal.SIGKILL)
                continue
            pid = os.fork()
            if pid == 0:
                control.close()
                for reaper in reapers:
                    os.close(reaper)
                _child(request, fds[0], server)
            os.close(fds[0])
            children[request["id"]] = pid
            reapers[os.pidfd_open(pid)] = request["id"]


if __name__ == "__main__":
    serve(socket.socket(fileno=sys.stdin.fileno()))
