"""The AppArmor profile a container runs under, and loading the runtime's default profile.

This host has no AppArmor: the kernel's profile list is a file here and apparmor_parser a
script recording what it is given; tests/guest loads and applies the profile on a real node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import Internal, InvalidArgument
from cri_shim.linux import kernel as linux_kernel
from cri_shim.oci import apparmor, security

pytestmark = pytest.mark.unit


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kernel's list of loaded profiles, as a file holding one localhost profile."""
    profiles = tmp_path / "profiles"
    profiles.write_text("mine (enforce)\n")
    monkeypatch.setattr(linux_kernel, "APPARMOR_PROFILES", profiles)
    return profiles


def context(**fields: object) -> api.LinuxContainerSecurityContext:
    return api.LinuxContainerSecurityContext(**fields)


def test_no_profile_and_runtime_default_mean_the_default_profile_where_apparmor_is_on(kernel: Path) -> None:
    runtime_default = api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault)
    for sc in (context(), context(apparmor=runtime_default), context(apparmor_profile="runtime/default")):
        assert security.apparmor(sc, host_enabled=True) == "cri-shim-default"
    assert security.apparmor(context(), host_enabled=False) is None  # no AppArmor: nothing to apply


def test_unconfined_and_localhost_profiles(kernel: Path) -> None:
    unconfined = api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined)
    assert security.apparmor(context(apparmor=unconfined), True) is None
    assert security.apparmor(context(apparmor_profile="unconfined"), True) is None
    local = api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="localhost/mine")
    assert security.apparmor(context(apparmor=local), True) == "mine"
    assert security.apparmor(context(apparmor_profile="localhost/mine"), True) == "mine"


def test_a_missing_or_empty_localhost_profile_is_refused(kernel: Path) -> None:
    missing = api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="localhost/absent")
    with pytest.raises(InvalidArgument, match="apparmor profile 'absent' is not loaded"):
        security.apparmor(context(apparmor=missing), True)
    empty = api.SecurityProfile(profile_type=api.SecurityProfile.Localhost)
    with pytest.raises(InvalidArgument, match="needs a profile name"):
        security.apparmor(context(apparmor=empty), True)


def fake_parser(tmp_path: Path, status: int) -> Path:
    """An apparmor_parser that records its arguments and input, and exits with status."""
    script = tmp_path / "apparmor_parser"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {tmp_path}/input\n'
                      f'echo "AppArmor parser error: refused" >&2\nexit {status}\n')
    script.chmod(0o755)
    return script


def test_the_default_profile_is_loaded_once(tmp_path: Path, kernel: Path) -> None:
    parser = fake_parser(tmp_path, 0)
    apparmor.ensure_default_loaded(str(parser))
    assert (tmp_path / "args").read_text().split() == ["-Kqr"]
    text = (tmp_path / "input").read_text()
    assert text == apparmor.profile_text() and "profile cri-shim-default " in text
    assert text.count("{") == text.count("}") and "deny mount," in text
    # StopContainer's signals come from runc or crun, under profiles of those names on Debian 13.
    assert "signal (receive) peer=runc," in text and "signal (receive) peer=crun," in text
    (tmp_path / "args").unlink()
    kernel.write_text("cri-shim-default (enforce)\n")
    apparmor.ensure_default_loaded(str(parser))
    assert not (tmp_path / "args").exists()


def test_a_profile_that_cannot_be_loaded_is_an_internal_error(tmp_path: Path, kernel: Path) -> None:
    with pytest.raises(Internal, match="cri-shim-default failed: AppArmor parser error: refused"):
        apparmor.ensure_default_loaded(str(fake_parser(tmp_path, 1)))
    with pytest.raises(Internal, match="not installed"):
        apparmor.ensure_default_loaded(str(tmp_path / "absent"))
