"""critest "Runtime info" specs (pkg/validate/runtime_info.go)."""

from __future__ import annotations

import pytest
from cri_api.v1 import api_pb2 as cri

from tests.conformance.framework import Clients

pytestmark = pytest.mark.conformance


def test_runtime_should_return_version_info(clients: Clients) -> None:
    version = clients.runtime.Version(cri.VersionRequest(version="v1"))
    assert version.version and version.runtime_name and version.runtime_version and version.runtime_api_version
    # Not asserted by critest, but kubelet refuses any other value (cri-requirements.md §1.1).
    assert version.version == "0.1.0"


def test_runtime_should_return_runtime_conditions(clients: Clients) -> None:
    status = clients.runtime.Status(cri.StatusRequest())
    ready = [c.type for c in status.status.conditions if c.type in ("RuntimeReady", "NetworkReady") and c.status]
    assert len(ready) >= 2, f"should return all the required runtime conditions: {status.status.conditions}"
