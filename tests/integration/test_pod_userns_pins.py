"""A pod's user namespace as sandbox.namespaces makes it: the user, net, ipc and uts namespaces
made together by a child process, the pod's id mappings written through it, all four pinned.
RunPodSandbox reaches this only with a handler that offers user namespaces (test_userns), which
this host's runc and crun do not; the namespaces themselves need none."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from cri_shim.idmappings import IdMappings, Mapping
from cri_shim.sandbox import namespaces
from cri_shim.sandbox.record import NAMESPACE_KINDS

pytestmark = pytest.mark.integration


def inside(pins: dict[str, str], *argv: str) -> str:
    """What argv prints run in the pinned namespaces (the user namespace's own view)."""
    joins = [f"--{kind}={path}" for kind, path in pins.items()]
    return subprocess.run(["nsenter", *joins, "--", *argv], check=True, capture_output=True, text=True).stdout


def test_the_pods_namespaces_are_owned_by_its_user_namespace_with_its_mappings(tmp_path: Path) -> None:
    ids = IdMappings(uids=(Mapping(0, 200000, 65536),), gids=(Mapping(0, 300000, 65536),))
    pins = {kind: namespaces.pin_path(tmp_path, kind, "sb") for kind in NAMESPACE_KINDS}
    try:
        asyncio.run(namespaces.make(namespaces.NamespaceSpec(pins=pins, hostname="podhost", ids=ids)))
        assert inside(pins, "cat", "/proc/self/uid_map").split() == ["0", "200000", "65536"]
        assert inside(pins, "cat", "/proc/self/gid_map").split() == ["0", "300000", "65536"]
        assert inside(pins, "hostname").strip() == "podhost"
    finally:
        for path in pins.values():
            namespaces.unpin(path)
    assert not any(Path(path).exists() for path in pins.values())
