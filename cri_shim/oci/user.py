"""The container's uid, gid and supplementary groups, resolved from the image's own files.

Names are looked up in the rootfs's /etc/passwd and /etc/group (read through rootpath, so a
symlinked /etc/passwd cannot point the runtime at a host file). The rules follow containerd:
- run_as_user (uid) or run_as_username (name) override the image User;
- the primary gid is run_as_group if set (an error without a user), else the user's passwd
  gid, else the group in the image User ("u:g"), else 0;
- with SupplementalGroupsPolicy Merge (the default) the groups /etc/group lists the user in
  are added; Strict adds none. CRI supplemental_groups come last; duplicates are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument
from cri_shim.oci import rootpath, values


@dataclass(frozen=True)
class ResolvedUser:
    """What the process runs as; also ContainerStatus.user."""

    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    username: str = ""


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: list[str]


def _rows(text: str | None, min_fields: int) -> Iterator[list[str]]:
    """The colon-separated fields of each usable line of a passwd-style file."""
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= min_fields and not line.startswith("#"):
            yield fields


def parse_passwd(text: str | None) -> list[PasswdEntry]:
    out = []
    for f in _rows(text, 4):
        if f[2].isdigit() and f[3].isdigit():
            out.append(PasswdEntry(f[0], int(f[2]), int(f[3])))
    return out


def parse_group(text: str | None) -> list[GroupEntry]:
    out = []
    for f in _rows(text, 3):
        if f[2].isdigit():
            out.append(GroupEntry(f[0], int(f[2]), [m for m in (f[3].split(",") if len(f) > 3 else []) if m]))
    return out


def _uid_entry(passwd: list[PasswdEntry], uid: int) -> PasswdEntry | None:
    return next((p for p in passwd if p.uid == uid), None)


def _name_entry(passwd: list[PasswdEntry], name: str) -> PasswdEntry | None:
    return next((p for p in passwd if p.name == name), None)


def _group_id(groups: list[GroupEntry], spec: str) -> int:
    if spec.isdigit():
        return int(spec)
    group = next((g for g in groups if g.name == spec), None)
    if group is None:
        raise InvalidArgument(f"group {spec!r} not found in the image's /etc/group")
    return group.gid


def resolve(rootfs: Path, sc: api_pb2.LinuxContainerSecurityContext, image_user: str) -> ResolvedUser:
    """The user the container runs as."""
    passwd = parse_passwd(rootpath.read_text(rootfs, "/etc/passwd"))
    groups = parse_group(rootpath.read_text(rootfs, "/etc/group"))
    image_group = ""
    if sc.HasField("run_as_user"):
        uid, entry = sc.run_as_user.value, _uid_entry(passwd, sc.run_as_user.value)
    elif sc.run_as_username:
        entry = _name_entry(passwd, sc.run_as_username)
        if entry is None:
            raise InvalidArgument(f"user {sc.run_as_username!r} not found in the image's /etc/passwd")
        uid = entry.uid
    else:
        user, _, image_group = image_user.partition(":")
        if not user or user.isdigit():
            uid = int(user or 0)
            entry = _uid_entry(passwd, uid)
        else:
            entry = _name_entry(passwd, user)
            if entry is None:
                raise InvalidArgument(f"image user {user!r} not found in the image's /etc/passwd")
            uid = entry.uid
    if sc.HasField("run_as_group"):
        if not sc.HasField("run_as_user") and not sc.run_as_username:
            raise InvalidArgument("run_as_group is set without run_as_user or run_as_username")
        gid = sc.run_as_group.value
    elif image_group and not sc.HasField("run_as_user") and not sc.run_as_username:
        gid = _group_id(groups, image_group)
    else:
        gid = entry.gid if entry else 0
    name = entry.name if entry else ""
    extra: list[int] = [gid]
    if sc.supplemental_groups_policy != api_pb2.Strict and name:
        extra += [g.gid for g in groups if name in g.members]
    extra += list(sc.supplemental_groups)
    seen: list[int] = []
    for g in extra:
        if g not in seen:
            seen.append(g)
    values.check_id("uid", uid)
    for g in seen:
        values.check_id("gid", g)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=seen, username=name)
