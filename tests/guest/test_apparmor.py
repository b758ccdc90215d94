"""AppArmor on a real node: the runtime's default profile is loaded and applied when a container
names none or asks for RuntimeDefault, a localhost profile is applied and enforced, unconfined
stays unconfined, and a profile the kernel has not loaded is refused leaving nothing behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri_shim.linux import kernel
from cri_shim.oci import apparmor
from tests.support.client import api
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import FOREVER, Pulled, container_config, create, exec_sync, logged_pod, pulled_daemon
from tests.support.workloads import pulling_from, run_container, verbose_info

pytestmark = pytest.mark.guest
pulled = pulled_daemon

# A localhost profile of the test's own: the default's freedom, but no writes below /etc.
LOCAL = "crishim-guest-no-etc-writes"
LOCAL_TEXT = f"""#include <tunables/global>
profile {LOCAL} flags=(attach_disconnected,mediate_deleted) {{
  #include <abstractions/base>
  network,
  capability,
  file,
  deny /etc/** w,
}}
"""


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


@pytest.fixture(scope="module")
def local_profile() -> Iterator[str]:
    subprocess.run(["apparmor_parser", "-Kr"], input=LOCAL_TEXT.encode(), check=True)
    yield LOCAL
    subprocess.run(["apparmor_parser", "-R"], input=LOCAL_TEXT.encode(), check=False)


def confinement(pid: int) -> str:
    """The process's AppArmor label, as the kernel reports it."""
    attr = Path(f"/proc/{pid}/attr/apparmor/current")
    return (attr if attr.exists() else Path(f"/proc/{pid}/attr/current")).read_text().strip("\x00\n")


def run_with(pulled: Pulled, name: str, profile: api.SecurityProfile | None) -> tuple[str, str]:
    """A pod with one running container under profile (None: the field left unset); (pod, container)."""
    pod = logged_pod(pulled.daemon, name)
    sid = run_pod(pulled.cri, pod)
    sc = api.LinuxContainerSecurityContext(apparmor=profile) if profile else api.LinuxContainerSecurityContext()
    config = container_config("app", "sh", "-c", FOREVER, image=pulled.image,
                              linux=api.LinuxContainerConfig(security_context=sc))
    return sid, run_container(pulled.cri, sid, pod, config)


def test_the_default_profile_is_loaded_and_applied(pulled: Pulled) -> None:
    runtime_default = api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault)
    for name, profile in (("unset", None), ("runtime-default", runtime_default)):
        sid, cid = run_with(pulled, name, profile)
        assert apparmor.DEFAULT_PROFILE in kernel.apparmor_profiles()
        assert confinement(verbose_info(pulled.cri, cid)["pid"]) == f"{apparmor.DEFAULT_PROFILE} (enforce)"
        # Its processes stay under it: an exec too.
        out = exec_sync(pulled.cri, cid, "cat", "/proc/self/attr/current")
        assert out.stdout.decode().strip("\x00\n") == f"{apparmor.DEFAULT_PROFILE} (enforce)"
        assert exec_sync(pulled.cri, cid, "touch", "/etc/probe").exit_code == 0
        remove_pod(pulled.cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_unconfined_and_a_localhost_profile(pulled: Pulled, local_profile: str) -> None:
    sid, cid = run_with(pulled, "unconfined", api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined))
    assert confinement(verbose_info(pulled.cri, cid)["pid"]) == "unconfined"
    remove_pod(pulled.cri, sid)
    local = api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref=f"localhost/{local_profile}")
    sid, cid = run_with(pulled, "local", local)
    assert confinement(verbose_info(pulled.cri, cid)["pid"]) == f"{local_profile} (enforce)"
    denied = exec_sync(pulled.cri, cid, "touch", "/etc/probe")
    assert denied.exit_code != 0 and b"Permission denied" in denied.stderr
    remove_pod(pulled.cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}


def test_a_profile_not_loaded_is_refused_leaving_nothing(pulled: Pulled) -> None:
    pod = logged_pod(pulled.daemon, "missing")
    sid = run_pod(pulled.cri, pod)
    missing = api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref="localhost/crishim-absent")
    config = container_config("app", "true", image=pulled.image, linux=api.LinuxContainerConfig(
        security_context=api.LinuxContainerSecurityContext(apparmor=missing)))
    with pytest.raises(grpc.RpcError) as refused:
        create(pulled.cri, sid, pod, config)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "apparmor profile 'crishim-absent' is not loaded" in refused.value.details()
    remove_pod(pulled.cri, sid)
    assert changes(pulled.before, snapshot(pulled.daemon)) == {}
