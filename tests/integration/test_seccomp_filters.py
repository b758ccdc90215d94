"""Containers with a seccomp profile reuse the filter their handler's runtime compiled for an
earlier container with the very same profile (crun keeps it in its state; runc keeps none).

Whatever is handed over, the kernel must enforce the container's own profile: RuntimeDefault
blocks unshare without CAP_SYS_ADMIN in every container given it, and a Localhost profile that
blocks chmod is never enforced with RuntimeDefault's filter (which allows chmod).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri_shim.api import api_pb2 as api
from cri_shim.errors import Internal
from cri_shim.runtime.record import ContainerRecord
from cri_shim.runtime.seccompfilters import FILTER_ANNOTATION, FILTER_FILE
from tests.support import crilog
from tests.support.containers import Harness

pytestmark = pytest.mark.integration

PROBE = "grep Seccomp: /proc/self/status; unshare -U true; echo unshare=$?; chmod 700 /tmp; echo chmod=$?"


@pytest.fixture(name="h")
def harness() -> Iterator[Harness]:
    """A harness of its own for each test: its filters start empty."""
    harness = Harness()
    yield harness
    harness.close()


def probe(h: Harness, profile: api.SecurityProfile) -> api.ContainerConfig:
    cfg = h.config("sh", "-c", PROBE)
    cfg.linux.security_context.seccomp.CopyFrom(profile)
    return cfg


def annotations(record: ContainerRecord) -> dict[str, str]:
    return json.loads((Path(record.bundle) / "config.json").read_text()).get("annotations", {})


def kept(h: Harness, record: ContainerRecord) -> bytes | None:
    path = h.runc.root / record.id / FILTER_FILE
    return path.read_bytes() if path.exists() else None


def finish(h: Harness, record: ContainerRecord) -> list[str]:
    """Starts the created container, waits for its end and removes it: its output lines."""
    done = h.wait_exit(h.start(record))
    lines = crilog.messages(crilog.parse(h.log_path(done)), "stdout")
    h.run(h.runtime.remove(done))
    return lines


def runtime_default() -> api.SecurityProfile:
    return api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault)


def localhost(tmp_path: Path) -> api.SecurityProfile:
    path = tmp_path / "no-chmod.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["chmod", "fchmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}]}))
    return api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref=str(path))


BLOCKED_BY_DEFAULT = ["Seccomp:\t2", "unshare=1", "chmod=0"]


def test_the_second_runtime_default_container_loads_the_first_ones_filter(h: Harness) -> None:
    first = h.create(probe(h, runtime_default()))
    compiled = kept(h, first)
    assert FILTER_ANNOTATION not in annotations(first)
    second = h.create(probe(h, runtime_default()))
    if compiled is not None:  # crun
        assert annotations(second)[FILTER_ANNOTATION] == base64.b64encode(compiled).decode()
        assert kept(h, second) == compiled
    else:  # runc: nothing kept, nothing handed over
        assert FILTER_ANNOTATION not in annotations(second) and kept(h, second) is None
    assert finish(h, first) == BLOCKED_BY_DEFAULT
    assert finish(h, second) == BLOCKED_BY_DEFAULT
    unconfined = h.create(probe(h, api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined)))
    assert FILTER_ANNOTATION not in annotations(unconfined)
    assert finish(h, unconfined)[0] == "Seccomp:\t0"
    assert h.leftovers()["runc state"] == h.leftovers()["bundles"] == []


def test_a_localhost_profile_gets_its_own_filter_never_runtime_defaults(h: Harness, tmp_path: Path) -> None:
    default = h.create(probe(h, runtime_default()))
    compiled = kept(h, default)
    own = [h.create(probe(h, localhost(tmp_path))) for _ in range(2)]
    assert FILTER_ANNOTATION not in annotations(own[0])
    if compiled is not None:
        assert kept(h, own[0]) not in (None, compiled)
        assert annotations(own[1])[FILTER_ANNOTATION] == base64.b64encode(kept(h, own[0]) or b"").decode()
    blocked_by_own = ["Seccomp:\t2", "unshare=0", "chmod=1"]
    assert finish(h, default) == BLOCKED_BY_DEFAULT
    assert [finish(h, record) for record in own] == [blocked_by_own] * 2


def test_a_failed_create_drops_its_profiles_filter(h: Harness) -> None:
    first = h.create(probe(h, runtime_default()))
    second = h.create(probe(h, runtime_default()))
    assert (FILTER_ANNOTATION in annotations(second)) == (kept(h, first) is not None)
    failing = h.config("/no/such/binary")
    failing.linux.security_context.seccomp.CopyFrom(runtime_default())
    with pytest.raises(Internal, match="/no/such/binary"):
        h.create(failing)
    assert {p.name for p in (h.dir / "bundles").iterdir()} == {first.id, second.id}  # nothing left of it
    after = h.create(probe(h, runtime_default()))
    assert FILTER_ANNOTATION not in annotations(after)  # compiled again
    assert [finish(h, record) for record in (first, second, after)] == [BLOCKED_BY_DEFAULT] * 3
