"""critest "AppArmor" specs (pkg/validate/apparmor_linux.go): three contexts (deprecated
apparmor_profile field, apparmor field, both set: the new one wins) x three profiles.

Like critest, every spec skips when the host's AppArmor is disabled, and loads its two test
profiles with apparmor_parser otherwise.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import Framework, expect_rejected

pytestmark = pytest.mark.conformance

PREFIX = "localhost/"
DENY_WRITE = "cri-validate-apparmor-test-deny-write"
AUDIT_WRITE = "cri-validate-apparmor-test-audit-write"
MISSING = "non-existent-profile"
PROFILES = f"""#include <tunables/global>
profile {DENY_WRITE} flags=(attach_disconnected) {{
  #include <abstractions/base>
  file,
  deny /** w,
}}
profile {AUDIT_WRITE} flags=(attach_disconnected) {{
  #include <abstractions/base>
  file,
  audit /** w,
}}
"""


def apparmor_enabled() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().startswith("Y")
    except OSError:
        return False


@pytest.fixture
def apparmor() -> None:
    if not apparmor_enabled():
        pytest.skip("AppArmor is disabled on this host (critest skips too)")
    with tempfile.NamedTemporaryFile("w", prefix="apparmor", dir="/tmp") as profiles:
        profiles.write(PROFILES)
        profiles.flush()
        subprocess.run(["apparmor_parser", "-r", "-W", profiles.name], check=True, capture_output=True)


def security(deprecated: str | None, field: str | None) -> cri.LinuxContainerSecurityContext:
    ctx = cri.LinuxContainerSecurityContext()
    if deprecated is not None:
        ctx.apparmor_profile = PREFIX + deprecated
    if field is not None:
        ctx.apparmor.CopyFrom(cri.SecurityProfile(profile_type=cri.SecurityProfile.Localhost, localhost_ref=PREFIX + field))
    return ctx


def touch_exit_code(f: Framework, ctx: cri.LinuxContainerSecurityContext) -> int:
    """critest's createContainerWithAppArmor (must succeed) + checkContainerApparmor: `touch /tmp/foo`'s exit code."""
    pod = f.create_pod_sandbox_for_container()
    spec = f.container_config("apparmor-test-", command=["touch", "/tmp/foo"], linux=cri.LinuxContainerConfig(security_context=ctx))
    container_id = f.create_container(spec, *pod)
    f.start_container(container_id)
    return f.wait_state(container_id, cri.CONTAINER_EXITED).exit_code


def create_fails(f: Framework, ctx: cri.LinuxContainerSecurityContext) -> None:
    pod = f.create_pod_sandbox_for_container()
    spec = f.container_config("apparmor-test-", command=["touch", "/tmp/foo"], linux=cri.LinuxContainerConfig(security_context=ctx))
    expect_rejected(lambda: f.create_container_with_error(spec, *pod))


# runtime should support deprecated apparmor_profile field

def test_deprecated_field_should_fail_with_an_unloaded_apparmor_profile(f: Framework, apparmor: None) -> None:
    create_fails(f, security(MISSING, None))


def test_deprecated_field_should_enforce_a_apparmor_profile_blocking_writes(f: Framework, apparmor: None) -> None:
    assert touch_exit_code(f, security(DENY_WRITE, None)) != 0


def test_deprecated_field_should_enforce_a_permissive_deprecated_profile(f: Framework, apparmor: None) -> None:
    assert touch_exit_code(f, security(AUDIT_WRITE, None)) == 0


# runtime should support apparmor field

def test_apparmor_field_should_fail_with_an_unloaded_apparmor_profile(f: Framework, apparmor: None) -> None:
    create_fails(f, security(None, MISSING))


def test_apparmor_field_should_enforce_a_apparmor_profile_blocking_writes(f: Framework, apparmor: None) -> None:
    assert touch_exit_code(f, security(None, DENY_WRITE)) != 0


def test_apparmor_field_should_enforce_a_permissive_deprecated_profile(f: Framework, apparmor: None) -> None:
    assert touch_exit_code(f, security(None, AUDIT_WRITE)) == 0


# runtime should prefer new apparmor field

def test_prefer_new_field_should_fail_with_an_unloaded_apparmor_profile(f: Framework, apparmor: None) -> None:
    create_fails(f, security(MISSING, MISSING))


def test_prefer_new_field_should_enforce_a_apparmor_profile_blocking_writes(f: Framework, apparmor: None) -> None:
    assert touch_exit_code(f, security(MISSING, DENY_WRITE)) != 0


def test_prefer_new_field_should_work_with_apparmor_profile(f: Framework, apparmor: None) -> None:
    assert touch_exit_code(f, security(MISSING, AUDIT_WRITE)) == 0
