"""Container log paths: the lexical checks, and the walk that never follows a symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cri_shim.errors import FailedPrecondition, InvalidArgument
from cri_shim.linux import nofollow
from cri_shim.runtime import logfile

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("directory, path, expected", [
    ("/var/log/pods/p", "c/0.log", "/var/log/pods/p/c/0.log"),
    ("/var/log/pods/p/", "./c//0.log", "/var/log/pods/p/c/0.log"),
    ("", "/abs/0.log", "/abs/0.log"),
    ("/var/log/pods/p", "", ""),
])
def test_resolve(directory: str, path: str, expected: str) -> None:
    assert logfile.resolve(directory, path) == expected


@pytest.mark.parametrize("directory, path, message", [
    ("/var/log/pods/p\x00x", "0.log", "NUL"),
    ("/var/log/pods/p\x00x", "", "NUL"),
    ("/var/log/pods/p", "0\x00.log", "NUL"),
    ("/var/log/pods/p", "../q/0.log", "escapes"),
    ("/var/log/pods/p", "/etc/0.log", "relative"),
    ("", "0.log", "not absolute"),
])
def test_resolve_refuses(directory: str, path: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        logfile.resolve(directory, path)


def test_open_dir_refuses_a_symlink_anywhere(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("")
    os.close(nofollow.open_dir(str(tmp_path / "real" / "sub")))
    with pytest.raises(nofollow.UnsafePath, match="/link is a symlink"):
        nofollow.open_dir(str(tmp_path / "link" / "sub"))
    with pytest.raises(nofollow.UnsafePath, match="/file is not a directory"):
        nofollow.open_dir(str(tmp_path / "file" / "x"), create=True)
    with pytest.raises(nofollow.UnsafePath, match="'..'"):
        nofollow.open_dir(str(tmp_path / "real" / ".." / "real"))
    with pytest.raises(FileNotFoundError):
        nofollow.open_dir(str(tmp_path / "missing" / "deeper"))
    assert not (tmp_path / "missing").exists()


def test_open_dir_makes_what_is_missing(tmp_path: Path) -> None:
    fd = nofollow.open_dir(str(tmp_path / "a" / "b"), create=True)
    try:
        assert os.fstat(fd).st_ino == (tmp_path / "a" / "b").stat().st_ino
    finally:
        os.close(fd)


def test_verify_makes_nothing_and_refuses_planted_links(tmp_path: Path) -> None:
    assert logfile.verify(str(tmp_path / "pod"), "c/0.log") == str(tmp_path / "pod" / "c" / "0.log")
    assert not (tmp_path / "pod").exists()
    (tmp_path / "pod").mkdir()
    (tmp_path / "pod" / "0.log").symlink_to(tmp_path / "victim")
    with pytest.raises(InvalidArgument, match="not a regular file"):
        logfile.verify(str(tmp_path / "pod"), "0.log")
    (tmp_path / "pod" / "1.log").write_text("")
    os.link(tmp_path / "pod" / "1.log", tmp_path / "elsewhere")
    with pytest.raises(InvalidArgument, match="hard link"):
        logfile.verify(str(tmp_path / "pod"), "1.log")
    assert not (tmp_path / "victim").exists()


def test_for_create_makes_the_file_and_for_reopen_refuses_a_swapped_directory(tmp_path: Path) -> None:
    path = str(tmp_path / "pod" / "c" / "0.log")
    with logfile.for_create(path) as (fd, name):
        assert name == "0.log" and os.fstat(fd).st_ino == (tmp_path / "pod" / "c").stat().st_ino
    assert (tmp_path / "pod" / "c" / "0.log").stat().st_mode & 0o777 == 0o600
    (tmp_path / "pod").rename(tmp_path / "moved")
    with pytest.raises(FailedPrecondition, match="gone"):
        with logfile.for_reopen(path):
            pass
    (tmp_path / "pod").symlink_to(tmp_path / "moved")
    with pytest.raises(FailedPrecondition, match="symlink"):
        with logfile.for_reopen(path):
            pass
    with pytest.raises(InvalidArgument, match="symlink"):
        with logfile.for_create(path):
            pass
