"""A container's annotations are copied into its OCI spec, and some keys there are commands to the
OCI runtime rather than notes (cri_shim.oci.spec.RUNTIME_ANNOTATION_PREFIXES): a client must not
hand crun a seccomp filter of its own or systemd a device rule. Each such key is refused before
anything exists, under the handler the suite runs on."""

from __future__ import annotations

import base64
import struct
from typing import Any

import grpc
import pytest

from tests.support.client import api
from tests.support.pods import changes, remove_pod, run_pod, snapshot
from tests.support.registry import Registry
from tests.support.workloads import (
    Pulled, container_config, create, exec_sync, logged_pod, pulled_daemon, pulling_from, run_container,
)

pytestmark = pytest.mark.integration
_ = pulled_daemon  # the `pulled` fixture

# A classic BPF program of one instruction: return SECCOMP_RET_ALLOW for every system call.
ALLOW_ALL = base64.b64encode(struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)).decode()


@pytest.fixture
def daemon_overrides(registry: Registry) -> dict[str, Any]:
    return pulling_from(registry)


HOSTILE = [
    {"run.oci.seccomp_bpf_data": ALLOW_ALL},
    {"org.systemd.property.DeviceAllow": "'/dev/mem rwm'"},
    {"run.oci.hooks.stdout": "/etc/passwd"},
    {"Run.Oci.Keep_Original_Groups": "1"},
]


@pytest.mark.parametrize("annotations", HOSTILE, ids=[next(iter(a)) for a in HOSTILE])
def test_annotations_the_runtime_acts_on_are_refused_and_leave_nothing(pulled: Pulled, annotations: dict[str, str]) -> None:
    cri, d = pulled.cri, pulled.daemon
    pod = logged_pod(d, "annotated")
    sid = run_pod(cri, pod)
    before = snapshot(d)
    hostile = container_config("hostile", "sleep", "600", image=pulled.name, annotations=annotations)
    hostile.linux.security_context.seccomp.profile_type = api.SecurityProfile.RuntimeDefault
    with pytest.raises(grpc.RpcError) as err:
        create(cri, sid, pod, hostile)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert next(iter(annotations)) in err.value.details()
    assert changes(before, snapshot(d)) == {}
    # The same container without the key runs, confined by the default profile.
    hostile.annotations.clear()
    hostile.annotations["example.com/run.oci.note"] = "carried"
    cid = run_container(cri, sid, pod, hostile)
    assert exec_sync(cri, cid, "grep", "^Seccomp:", "/proc/self/status").stdout.split()[1] == b"2"
    remove_pod(cri, sid)
    assert changes(pulled.before, snapshot(d)) == {}
