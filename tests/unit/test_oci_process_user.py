"""Spec rules for argv, environment, working directory and user resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import InvalidArgument
from cri_shim.oci import process, rootpath, user
from cri_shim.image.imageconfig import ImageConfig
from tests.support.etc import minimal_rootfs

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("command", "args", "entrypoint", "cmd", "expected"), [
    ([], [], ["/ep"], ["c1"], ["/ep", "c1"]),
    (["/cmd"], [], ["/ep"], ["c1"], ["/cmd"]),
    (["/cmd"], ["a"], ["/ep"], ["c1"], ["/cmd", "a"]),
    ([], ["a"], ["/ep"], ["c1"], ["/ep", "a"]),
    ([], [], [""], ["c1"], ["c1"]),
    ([], [], [], ["c1", "c2"], ["c1", "c2"]),
])
def test_args_merging(command: list[str], args: list[str], entrypoint: list[str], cmd: list[str], expected: list[str]) -> None:
    cfg = api.ContainerConfig(command=command, args=args)
    assert process.args(cfg, ImageConfig(entrypoint=entrypoint, cmd=cmd)) == expected


def test_no_command_at_all_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        process.args(api.ContainerConfig(), ImageConfig())


def test_env_merging_replaces_in_place() -> None:
    cfg = api.ContainerConfig(envs=[api.KeyValue(key="A", value="cri"), api.KeyValue(key="C", value="3")])
    image = ImageConfig(env=["PATH=/image/bin", "A=image", "B=2"])
    assert process.env(cfg, image, "pod") == ["PATH=/image/bin", "HOSTNAME=pod", "A=cri", "B=2", "C=3"]
    assert process.env(api.ContainerConfig(), ImageConfig(), "")[0] == process.DEFAULT_PATH


def test_cwd() -> None:
    assert process.cwd(api.ContainerConfig(), ImageConfig()) == "/"
    assert process.cwd(api.ContainerConfig(), ImageConfig(working_dir="/w")) == "/w"
    assert process.cwd(api.ContainerConfig(working_dir="/c"), ImageConfig(working_dir="/w")) == "/c"
    with pytest.raises(InvalidArgument):
        process.cwd(api.ContainerConfig(working_dir="rel"), ImageConfig())


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return minimal_rootfs(tmp_path / "rootfs", "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/:/bin/sh\nbob:x:1001:50::/:/bin/sh\n", "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\nextra:x:60:alice,bob\n")


def sc(**kw: object) -> api.LinuxContainerSecurityContext:
    ctx = api.LinuxContainerSecurityContext()
    for key, value in kw.items():
        if key in ("run_as_user", "run_as_group"):
            getattr(ctx, key).value = value
        elif key == "supplemental_groups":
            ctx.supplemental_groups.extend(value)  # type: ignore[arg-type]
        else:
            setattr(ctx, key, value)
    return ctx


def test_run_as_user_takes_gid_from_passwd(rootfs: Path) -> None:
    u = user.resolve(rootfs, sc(run_as_user=1000), "")
    assert (u.uid, u.gid, u.additional_gids) == (1000, 1000, [1000, 50, 60])


def test_unknown_uid_gets_gid_0(rootfs: Path) -> None:
    u = user.resolve(rootfs, sc(run_as_user=4242), "")
    assert (u.uid, u.gid, u.additional_gids) == (4242, 0, [0])


def test_run_as_username(rootfs: Path) -> None:
    assert user.resolve(rootfs, sc(run_as_username="bob"), "").uid == 1001
    with pytest.raises(InvalidArgument, match="nobody"):
        user.resolve(rootfs, sc(run_as_username="nobody"), "")


def test_run_as_group_needs_a_user(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="run_as_group"):
        user.resolve(rootfs, sc(run_as_group=5), "alice")
    u = user.resolve(rootfs, sc(run_as_user=1000, run_as_group=7), "")
    assert (u.gid, u.additional_gids[0]) == (7, 7)


@pytest.mark.parametrize(("image_user", "uid", "gid"), [
    ("", 0, 0), ("alice", 1000, 1000), ("1001", 1001, 50), ("1001:60", 1001, 60), ("alice:staff", 1000, 50), ("77:77", 77, 77),
])
def test_image_user_forms(rootfs: Path, image_user: str, uid: int, gid: int) -> None:
    u = user.resolve(rootfs, sc(), image_user)
    assert (u.uid, u.gid) == (uid, gid)


def test_image_user_unknown_names_fail(rootfs: Path) -> None:
    for bad in ("carol", "alice:nogroup"):
        with pytest.raises(InvalidArgument):
            user.resolve(rootfs, sc(), bad)


def test_run_as_user_overrides_image_user_and_group(rootfs: Path) -> None:
    u = user.resolve(rootfs, sc(run_as_user=1001), "alice:staff")
    assert (u.uid, u.gid) == (1001, 50)


def test_supplemental_groups_merge_and_strict(rootfs: Path) -> None:
    merge = user.resolve(rootfs, sc(run_as_user=1000, supplemental_groups=[1234, 50]), "")
    assert merge.additional_gids == [1000, 50, 60, 1234]
    strict = user.resolve(rootfs, sc(run_as_user=1000, supplemental_groups=[1234], supplemental_groups_policy=api.Strict), "")
    assert strict.additional_gids == [1000, 1234]


def test_passwd_symlink_cannot_leave_the_rootfs(tmp_path: Path, rootfs: Path) -> None:
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to("../../../etc/passwd")
    with pytest.raises(InvalidArgument):
        user.resolve(rootfs, sc(run_as_username="evil"), "")
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to(str(outside / "passwd"))
    with pytest.raises(InvalidArgument):
        user.resolve(rootfs, sc(run_as_username="evil"), "")


def test_rootpath_resolution(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "a/b").mkdir(parents=True)
    (root / "abs").symlink_to("/a")
    (root / "up").symlink_to("../../../..")
    (root / "loop").symlink_to("loop")
    assert rootpath.resolve(root, "/abs/b") == root / "a/b"
    assert rootpath.resolve(root, "/up/a") == root / "a"
    assert rootpath.resolve(root, "/a/../../x/../new") == root / "new"
    with pytest.raises(rootpath.EscapeError):
        rootpath.resolve(root, "/loop")
    made = rootpath.mkdir_all(root, "/abs/c/d")
    assert made == root / "a/c/d" and made.is_dir()
