"""Seccomp filters an OCI runtime already compiled, handed back to it for later containers.

Compiling a seccomp profile into BPF is about half of what `crun create` or `crun run` takes
(32 to 36 ms of 68 to 70 for RuntimeDefault under load). Most containers of a host get one of
a few profiles (RuntimeDefault, which kubelet gives every pod under seccompDefault or PSA
restricted, with the capabilities it was built for), so once a handler's runtime has compiled a profile and kept the
filter in the container's state (crun does: `<state root>/<id>/seccomp.bpf`), later containers
of that handler with the very same profile are handed that filter in crun's
`run.oci.seccomp_bpf_data` annotation, which crun loads instead of compiling the profile again;
the spec still names the profile.

An entry is keyed by the runtime's state root and the whole `linux.seccomp` object (a digest of
its canonical JSON, and the JSON itself compared on a hit), so a profile that differs in any
field is compiled on its own. The filter is read from the runtime's own state directory (a
symlink is not followed, a file that is not a BPF program is not kept), never from anything a
container can write; client annotations under run.oci.* are refused before a spec is built
(cri_shim.oci.spec), so this is the only source of the annotation. A create or run that fails
with a profile drops its entry, so that the next one compiles it again. runc keeps no filter,
so its containers find none here and compile each time. The entries live in memory only: after
a restart the first container of each profile compiles it again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections import OrderedDict
from pathlib import Path
from typing import Any

# crun loads a seccomp filter compiled beforehand (base64 of its BPF) from this annotation.
FILTER_ANNOTATION = "run.oci.seccomp_bpf_data"
# The file in a container's runtime state where crun keeps the filter it loaded.
FILTER_FILE = "seccomp.bpf"
# A classic BPF program holds at most 4096 instructions of 8 bytes (BPF_MAXINSNS).
FILTER_MAX_BYTES = 4096 * 8
# Entries kept: a host runs a few profiles (RuntimeDefault per capability set, some Localhost
# ones); each entry is at most about 44 KB of base64 plus its profile's JSON.
MAX_ENTRIES = 32


def compiled_filter(state: Path) -> str | None:
    """The seccomp filter a runtime kept in a container's state directory, base64 encoded; None
    when it keeps none, or the file is not a BPF program (a symlink is not followed)."""
    try:
        fd = os.open(state / FILTER_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = f.read(FILTER_MAX_BYTES + 1)
    if not data or len(data) > FILTER_MAX_BYTES or len(data) % 8:
        return None
    return base64.b64encode(data).decode()


def _canonical(profile: dict[str, Any]) -> str:
    return json.dumps(profile, sort_keys=True, separators=(",", ":"))


class SeccompFilters:
    """The filters runtimes compiled, by state root and profile, least recently used dropped first."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        # (state root, digest of the profile's canonical JSON) -> (that JSON, base64 filter).
        self._entries: OrderedDict[tuple[Path, str], tuple[str, str]] = OrderedDict()

    @staticmethod
    def _key(root: Path, spec: dict[str, Any]) -> tuple[tuple[Path, str], str] | None:
        profile = spec.get("linux", {}).get("seccomp")
        if not profile:
            return None
        canonical = _canonical(profile)
        return (root, hashlib.sha256(canonical.encode()).hexdigest()), canonical

    def annotate(self, root: Path, spec: dict[str, Any]) -> bool:
        """Adds the filter compiled for the spec's profile by the runtime of `root` to the spec's
        annotations; whether there was one (a spec without a profile gets nothing)."""
        found = self._key(root, spec)
        if found is None:
            return False
        key, canonical = found
        entry = self._entries.get(key)
        if entry is None or entry[0] != canonical:
            return False
        self._entries.move_to_end(key)
        spec.setdefault("annotations", {})[FILTER_ANNOTATION] = entry[1]
        return True

    def learn(self, root: Path, spec: dict[str, Any], container_id: str) -> None:
        """After a successful create or run of `spec`: keeps the filter the runtime compiled for
        its profile, when it kept one in the container's state."""
        found = self._key(root, spec)
        if found is None or (compiled := compiled_filter(root / container_id)) is None:
            return
        key, canonical = found
        self._entries[key] = (canonical, compiled)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, root: Path, spec: dict[str, Any]) -> None:
        """After a failed create or run of `spec`: the next one with its profile compiles it again."""
        found = self._key(root, spec)
        if found is not None:
            self._entries.pop(found[0], None)
