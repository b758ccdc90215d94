"""Runtime handler features from `runc features` and the kernel release."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from cri_shim.runtime.features import HandlerFeatures, from_features, kernel_version, traversable

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


def test_user_namespaces_come_from_the_host_not_the_handler() -> None:
    assert from_features(RUNC_1_1, (6, 1), True).user_namespaces
    assert not from_features(RUNC_1_1, (6, 1)).user_namespaces
    top = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp_path sits below a 0700 directory
    try:
        open_dir = top / "open"
        open_dir.mkdir()
        top.chmod(0o711)
        assert traversable(open_dir / "not-yet" / "made")
        top.chmod(0o700)
        assert not traversable(open_dir)
    finally:
        shutil.rmtree(top)
