"""Runtime handler features from `runc features` and the kernel release."""

from __future__ import annotations

import json

import pytest

from cri_shim.runtime.features import HandlerFeatures, from_features, kernel_version

pytestmark = pytest.mark.unit

RUNC_1_1 = json.dumps({"ociVersionMin": "1.0.0", "mountOptions": ["bind", "rbind", "ro", "rro", "rw"]}).encode()


def test_kernel_versions() -> None:
    assert kernel_version("6.1.0-18-amd64") == (6, 1)
    assert kernel_version("5.12.19") == (5, 12)
    assert kernel_version("4.19rc1") == (4, 19)
    assert kernel_version("garbage") == (0, 0)


def test_recursive_read_only_needs_rro_and_mount_setattr() -> None:
    assert from_features(RUNC_1_1, (5, 12)) == HandlerFeatures(recursive_read_only_mounts=True)
    assert from_features(RUNC_1_1, (5, 11)) == HandlerFeatures(recursive_read_only_mounts=False)
    without = json.dumps({"mountOptions": ["bind", "ro"]}).encode()
    assert not from_features(without, (6, 1)).recursive_read_only_mounts
    assert not from_features(b"not json", (6, 1)).recursive_read_only_mounts
    assert not from_features(b"[]", (6, 1)).recursive_read_only_mounts
