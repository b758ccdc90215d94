"""The seccomp filters a runtime compiled, kept by state root and exact profile and handed back."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from cri_shim.runtime import seccompfilters
from cri_shim.runtime.seccompfilters import FILTER_ANNOTATION, FILTER_FILE, SeccompFilters

pytestmark = pytest.mark.unit

PROGRAM = bytes(range(16))


def spec(**seccomp: Any) -> dict[str, Any]:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}], **seccomp}
    return {"linux": {"seccomp": profile}, "annotations": {"io.kubernetes.cri.container-name": "c"}}


def kept(root: Path, container_id: str, program: bytes = PROGRAM) -> None:
    (root / container_id).mkdir(parents=True)
    (root / container_id / FILTER_FILE).write_bytes(program)


def test_a_kept_filter_is_read_only_when_it_is_a_bpf_program(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    assert seccompfilters.compiled_filter(state) is None  # a runtime that keeps none
    (state / FILTER_FILE).write_bytes(PROGRAM)
    assert seccompfilters.compiled_filter(state) == base64.b64encode(PROGRAM).decode()
    for bad in (b"", b"x" * 9, b"x" * (seccompfilters.FILTER_MAX_BYTES + 8)):
        (state / FILTER_FILE).write_bytes(bad)
        assert seccompfilters.compiled_filter(state) is None, len(bad)
    (tmp_path / "elsewhere").write_bytes(PROGRAM)
    (state / FILTER_FILE).unlink()
    os.symlink(tmp_path / "elsewhere", state / FILTER_FILE)
    assert seccompfilters.compiled_filter(state) is None
    (state / FILTER_FILE).unlink()
    os.mkfifo(state / FILTER_FILE)  # never blocks on, nor reads, anything but a regular file
    assert seccompfilters.compiled_filter(state) is None


def test_a_later_spec_with_the_same_profile_is_handed_the_filter(tmp_path: Path) -> None:
    filters = SeccompFilters()
    first, later = spec(), spec()
    assert filters.annotate(tmp_path, first) is False
    assert FILTER_ANNOTATION not in first["annotations"]
    kept(tmp_path, "c1")
    filters.learn(tmp_path, first, "c1")
    assert filters.annotate(tmp_path, later) is True
    assert later["annotations"] == {"io.kubernetes.cri.container-name": "c",
                                    FILTER_ANNOTATION: base64.b64encode(PROGRAM).decode()}
    assert later["linux"]["seccomp"] == first["linux"]["seccomp"]  # the spec still names the profile


def test_a_filter_serves_only_its_exact_profile_and_its_runtime(tmp_path: Path) -> None:
    filters = SeccompFilters()
    kept(tmp_path / "crun", "c1")
    filters.learn(tmp_path / "crun", spec(), "c1")
    for other in (spec(defaultAction="SCMP_ACT_KILL"), spec(flags=["SECCOMP_FILTER_FLAG_LOG"]),
                  spec(syscalls=[{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}])):
        assert filters.annotate(tmp_path / "crun", other) is False, other
    assert filters.annotate(tmp_path / "other", spec()) is False  # another handler's runtime
    # Key order is not a difference.
    reordered = {"linux": {"seccomp": dict(reversed(list(spec()["linux"]["seccomp"].items())))}}
    assert filters.annotate(tmp_path / "crun", reordered) is True


def test_a_spec_without_seccomp_gets_nothing(tmp_path: Path) -> None:
    filters = SeccompFilters()
    unconfined: dict[str, Any] = {"linux": {}}
    kept(tmp_path, "c1")
    filters.learn(tmp_path, unconfined, "c1")
    assert filters.annotate(tmp_path, unconfined) is False and "annotations" not in unconfined


def test_nothing_is_kept_from_a_runtime_that_keeps_no_filter_or_a_bad_one(tmp_path: Path) -> None:
    filters = SeccompFilters()
    (tmp_path / "c1").mkdir()  # runc: no seccomp.bpf
    filters.learn(tmp_path, spec(), "c1")
    kept(tmp_path, "c2", b"garbage")  # not a whole number of BPF instructions
    filters.learn(tmp_path, spec(), "c2")
    (tmp_path / "c3").mkdir()
    (tmp_path / "elsewhere").write_bytes(PROGRAM)
    os.symlink(tmp_path / "elsewhere", tmp_path / "c3" / FILTER_FILE)
    filters.learn(tmp_path, spec(), "c3")
    assert filters.annotate(tmp_path, spec()) is False


def test_a_failure_drops_the_profiles_entry_only(tmp_path: Path) -> None:
    filters = SeccompFilters()
    other = spec(defaultAction="SCMP_ACT_KILL")
    kept(tmp_path, "c1")
    kept(tmp_path, "c2", PROGRAM[::-1])
    filters.learn(tmp_path, spec(), "c1")
    filters.learn(tmp_path, other, "c2")
    filters.forget(tmp_path, spec())
    assert filters.annotate(tmp_path, spec()) is False
    assert filters.annotate(tmp_path, other) is True


def test_the_least_recently_used_entry_goes_first(tmp_path: Path) -> None:
    filters = SeccompFilters(max_entries=2)
    profiles = [spec(defaultErrnoRet=n) for n in range(3)]
    for n, profile in enumerate(profiles[:2]):
        kept(tmp_path, f"c{n}")
        filters.learn(tmp_path, profile, f"c{n}")
    assert filters.annotate(tmp_path, spec(defaultErrnoRet=0)) is True  # c0's profile used last
    kept(tmp_path, "c2")
    filters.learn(tmp_path, profiles[2], "c2")
    hits = [filters.annotate(tmp_path, spec(defaultErrnoRet=n)) for n in range(3)]
    assert hits == [True, False, True]
